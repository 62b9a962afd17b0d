"""A real Prometheus scrapes the exporter over TLS with basic auth, as the web config demands."""

from __future__ import annotations

import ssl
import urllib.parse
from typing import TYPE_CHECKING

import bcrypt
import pytest
import trustme
import yaml
from harness import start_exporter, start_prometheus, wait_for

from migexporter import catalog

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.integration

USER, PASSWORD = "prometheus", "correct horse battery staple"


def test_prometheus_scrapes_over_tls_with_basic_auth(tmp_path: Path) -> None:
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1")
    server.cert_chain_pems[0].write_to_path(str(tmp_path / "server.pem"))
    server.private_key_pem.write_to_path(str(tmp_path / "server.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(10)).decode()
    web_config = tmp_path / "web.yml"
    web_config.write_text(
        yaml.safe_dump(
            {
                "tls_server_config": {"cert_file": "server.pem", "key_file": "server.key"},
                "basic_auth_users": {USER: hashed},
            }
        )
    )
    trust = ssl.create_default_context()
    ca.configure_trust(trust)
    for workdir in ("good", "wrong"):
        (tmp_path / workdir).mkdir()
    exporter = start_exporter(tmp_path, "--web-config", str(web_config), context=trust)
    try:
        assert exporter.url.startswith("https://")
        assert exporter.get("/metrics").status == 401  # no credentials
        target = urllib.parse.urlsplit(exporter.url).netloc
        tls = {"ca_file": str(tmp_path / "ca.pem")}
        good = start_prometheus(
            tmp_path / "good",
            [target],
            scrape={
                "scheme": "https",
                "tls_config": tls,
                "basic_auth": {"username": USER, "password": PASSWORD},
            },
        )
        wrong = start_prometheus(
            tmp_path / "wrong",
            [target],
            scrape={
                "scheme": "https",
                "tls_config": tls,
                "basic_auth": {"username": USER, "password": "guess"},
            },
        )
        try:
            up = wait_for(
                lambda: good.query(f"up and on () {catalog.BUILD_INFO.name}"),
                timeout=30,
                what="Prometheus scraping over TLS with basic auth",
            )
            assert [s.value for s in up] == [1.0]
            refused = wait_for(
                lambda: wrong.query("up"),
                timeout=30,
                what="the scrape with a wrong password",
            )
            assert [s.value for s in refused] == [0.0]
            assert not wrong.query(catalog.BUILD_INFO.name)
        finally:
            good.service.stop()
            wrong.service.stop()
    finally:
        exporter.stop()
