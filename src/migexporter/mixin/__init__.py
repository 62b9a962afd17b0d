"""The monitoring mixin: dashboards, alert and recording rules, Kubernetes manifests, previews.

Generators of the committed artefacts, built from the metric and XID catalogs. They write files;
nothing on the serving path imports this package (a test holds it to that).
"""
