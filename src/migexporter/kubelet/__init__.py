"""The kubelet's pod-resources API: its protobuf messages, generated from ``podresources.proto``."""
