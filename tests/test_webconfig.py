"""--web-config: the exporter-toolkit file, TLS with real certificates, basic auth, reloads."""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
import urllib.error
import urllib.request
from typing import TYPE_CHECKING

import bcrypt
import pytest
import trustme
import yaml

from cli_run import run_cli
from migexporter.collector import Collector
from migexporter.config import ConfigError
from migexporter.exposition import BuildInfo
from migexporter.server import create_app, start_server
from migexporter.webconfig import REALM, WebState, load
from stub_backend import StubBackend

if TYPE_CHECKING:
    from pathlib import Path

PASSWORD = "s3cret"  # noqa: S105  (a test credential)
HASH = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(4)).decode()  # cost 4: fast tests


class Pki:
    """A CA with a server certificate for 127.0.0.1 and a client certificate, on disk."""

    def __init__(self, directory: Path, name: str = "ca") -> None:
        self.ca = trustme.CA()
        self.dir = directory
        server = self.ca.issue_cert("127.0.0.1")
        self.cert = directory / f"{name}-server.pem"
        self.key = directory / f"{name}-server.key"
        self.ca_file = directory / f"{name}.pem"
        server.cert_chain_pems[0].write_to_path(str(self.cert))
        server.private_key_pem.write_to_path(str(self.key))
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.client = self.ca.issue_cert("scraper@example.com")

    def client_context(self, *, with_cert: bool = False) -> ssl.SSLContext:
        context = ssl.create_default_context()
        self.ca.configure_trust(context)
        if with_cert:
            self.client.configure_cert(context)
        return context


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return Pki(tmp_path)


def _write(path: Path, data: object) -> str:
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _tls(pki: Pki, **extra: object) -> dict[str, object]:
    return {"cert_file": pki.cert.name, "key_file": pki.key.name, **extra}  # relative names


# --- the file -----------------------------------------------------------------------------------
def test_a_full_file_loads_with_names_relative_to_it(pki: Pki):
    path = _write(
        pki.dir / "web.yml",
        {
            "tls_server_config": _tls(
                pki,
                client_auth_type="RequireAndVerifyClientCert",
                client_ca_file=pki.ca_file.name,
                min_version="TLS13",
            ),
            "http_server_config": {"headers": {"X-Frame-Options": "deny"}},
            "basic_auth_users": {"prometheus": HASH},
        },
    )
    config = load(path)
    assert config.tls is not None
    assert config.tls.cert_file == str(pki.cert)
    assert config.tls.client_auth == ssl.CERT_REQUIRED
    assert config.tls.min_version == ssl.TLSVersion.TLSv1_3
    assert config.users == {"prometheus": HASH.encode()}
    assert config.headers == {"X-Frame-Options": "deny"}
    assert load(_write(pki.dir / "empty.yml", None)).tls is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"tls_server_config": {"cert_file": "x"}}, "tls_server_config.key_file is required"),
        ({"tls_server_config": {"cert": "PEM", "key": "PEM"}}, "tls_server_config.cert: inline"),
        ({"tls": {}}, "unknown key 'tls'"),
        ({"basic_auth_users": {"u": "plain"}}, "basic_auth_users.u: not a bcrypt hash"),
        ({"basic_auth_users": ["u"]}, "basic_auth_users: expected a mapping"),
        ({"http_server_config": {"http2": True}}, "HTTP/2 is not served"),
        ({"http_server_config": {"headers": {"Server": "x"}}}, "unknown key 'Server'"),
        ({"rate_limit": {"interval": "1s"}}, "unknown key 'rate_limit'"),
        ("[1, 2", "not valid YAML"),
    ],
)
def test_bad_files_fail_with_one_line_naming_the_key(tmp_path: Path, content, message):
    path = tmp_path / "web.yml"
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    with pytest.raises(ConfigError) as caught:
        load(str(path))
    text = str(caught.value)
    assert message in text
    assert text.startswith(f"web config {path}: ")
    assert "\n" not in text


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"client_auth_type": "RequireAnyClientCert"}, "verifies every client certificate"),
        ({"client_auth_type": "RequestClientCert"}, "verifies every client certificate"),
        ({"client_auth_type": "RequireAndVerifyClientCert"}, "needs client_ca_file"),
        ({"client_auth_type": "Sometimes"}, "is not one of"),
        ({"cipher_suites": ["TLS_AES_128_GCM_SHA256"]}, "cipher-suite names"),
        ({"curve_preferences": ["X25519"]}, "curve preferences"),
        ({"client_allowed_sans": ["a"]}, "SAN filtering"),
        ({"min_version": "TLS13", "max_version": "TLS12"}, "min_version is above max_version"),
        ({"min_version": "SSL3"}, "'SSL3' is not one of"),
        ({"key_file": "missing.key"}, r"key_file \S*missing.key: No such file"),
        ({"cert_file": "missing.crt"}, r"cert_file \S*missing.crt: No such file"),
    ],
)
def test_tls_settings_python_cannot_honour_are_refused(pki: Pki, tls, message):
    path = _write(pki.dir / "web.yml", {"tls_server_config": {**_tls(pki), **tls}})
    with pytest.raises(ConfigError, match=message):
        load(path)


def test_a_bad_file_stops_the_exporter_with_one_line_and_status_2(tmp_path: Path):
    path = _write(tmp_path / "web.yml", {"basic_auth_users": {"u": "plain"}})
    done = run_cli("--simulate", "--web-config", path, "--listen", "127.0.0.1:0")
    assert done.returncode == 2
    expected = f"web config {path}: basic_auth_users.u: not a bcrypt hash ($2a$, $2b$ or $2y$)"
    assert done.stderr.strip().splitlines() == [f"migexporter: error: {expected}"]


# --- over the wire ------------------------------------------------------------------------------
class Exporter:
    """An exporter on a stub backend behind a web configuration, on a free loopback port."""

    def __init__(self, state: WebState, url: str) -> None:
        self.state = state
        self.url = url

    async def get(
        self,
        path: str = "/metrics",
        *,
        context: ssl.SSLContext | None = None,
        user: tuple[str, str] | None = None,
    ) -> tuple[int, dict[str, str]]:
        headers = {}
        if user is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(":".join(user).encode()).decode()

        def call() -> tuple[int, dict[str, str]]:
            opener = urllib.request.build_opener(
                urllib.request.ProxyHandler({}), urllib.request.HTTPSHandler(context=context)
            )
            request = urllib.request.Request(self.url + path, headers=headers)
            try:
                with opener.open(request, timeout=5) as reply:
                    return reply.status, dict(reply.headers.items())
            except urllib.error.HTTPError as error:
                with error:
                    return error.code, dict(error.headers.items())

        return await asyncio.to_thread(call)


@pytest.fixture
async def serve():
    started = []

    async def start(path: str) -> Exporter:
        state = WebState(load(path))
        collector = Collector(StubBackend(), BuildInfo("test"), interval=3600)
        await collector.start()
        server = await start_server(create_app(collector, state), "127.0.0.1", 0, state.listener)
        started.append((server, collector))
        return Exporter(state, server.url)

    yield start
    for server, collector in started:
        await server.close()
        await collector.stop()


async def test_tls_serves_https_with_the_configured_certificate(pki: Pki, serve):
    exporter = await serve(_write(pki.dir / "web.yml", {"tls_server_config": _tls(pki)}))
    assert exporter.url.startswith("https://127.0.0.1:")
    status, _ = await exporter.get(context=pki.client_context())
    assert status == 200
    other = Pki(pki.dir, "other")  # a client that trusts another CA refuses the server
    with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
        await exporter.get(context=other.client_context())


async def test_a_required_client_certificate_is_required_and_verified(pki: Pki, serve):
    exporter = await serve(
        _write(
            pki.dir / "web.yml",
            {
                "tls_server_config": _tls(
                    pki,
                    client_auth_type="RequireAndVerifyClientCert",
                    client_ca_file=pki.ca_file.name,
                )
            },
        )
    )
    assert (await exporter.get(context=pki.client_context(with_cert=True)))[0] == 200
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        await exporter.get(context=pki.client_context())
    stranger = Pki(pki.dir, "stranger")  # a certificate from a CA the server does not trust
    context = pki.client_context()
    stranger.client.configure_cert(context)
    with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
        await exporter.get(context=context)


async def test_basic_auth_answers_401_with_a_challenge(tmp_path: Path, serve):
    exporter = await serve(
        _write(
            tmp_path / "web.yml",
            {
                "basic_auth_users": {"prometheus": HASH},
                "http_server_config": {"headers": {"X-Content-Type-Options": "nosniff"}},
            },
        )
    )
    for user in (None, ("prometheus", "wrong"), ("nobody", PASSWORD), ("prometheus", "")):
        status, headers = await exporter.get(user=user)
        assert status == 401, user
        assert headers["WWW-Authenticate"] == REALM
        assert headers["X-Content-Type-Options"] == "nosniff"
    status, headers = await exporter.get(user=("prometheus", PASSWORD))
    assert status == 200
    assert headers["X-Content-Type-Options"] == "nosniff"
    # A second right answer comes from the cache of checked passwords; still right.
    assert (await exporter.get(user=("prometheus", PASSWORD)))[0] == 200
    # Probes need no credentials; they tell nothing but up and ready.
    assert (await exporter.get("/-/healthy"))[0] == 200
    assert (await exporter.get("/-/ready"))[0] == 200
    assert (await exporter.get("/api/events"))[0] == 401
    assert (await exporter.get("/no/such/path"))[0] == 401


async def test_a_rotated_certificate_is_served_without_a_restart(pki: Pki, serve):
    path = pki.dir / "web.yml"
    exporter = await serve(_write(path, {"tls_server_config": _tls(pki)}))
    rotated = Pki(pki.dir, "rotated")
    _write(path, {"tls_server_config": {"cert_file": rotated.cert.name, "key_file": "x.key"}})
    watch = asyncio.create_task(exporter.state.watch(poll_s=0.02))
    try:
        await asyncio.sleep(0.2)  # a file that does not load: the last good one stays
        assert (await exporter.get(context=pki.client_context()))[0] == 200
        _write(path, {"tls_server_config": _tls(rotated)})
        for _ in range(250):
            try:
                status, _ = await exporter.get(context=rotated.client_context())
            except urllib.error.URLError:
                await asyncio.sleep(0.02)
                continue
            break
        assert status == 200
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):
            await exporter.get(context=pki.client_context())
    finally:
        watch.cancel()


async def test_a_bad_reload_keeps_the_last_good_users_and_logs(tmp_path: Path, serve, caplog):
    caplog.set_level(logging.INFO, logger="migexporter.webconfig")
    path = tmp_path / "web.yml"
    exporter = await serve(_write(path, {"basic_auth_users": {"prometheus": HASH}}))
    watch = asyncio.create_task(exporter.state.watch(poll_s=0.02))
    try:
        path.write_text("basic_auth_users: [")
        for _ in range(250):
            if any("keeping the last good" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        assert (await exporter.get(user=("prometheus", PASSWORD)))[0] == 200
        assert (await exporter.get())[0] == 401
        other = bcrypt.hashpw(b"new", bcrypt.gensalt(4)).decode()
        _write(path, {"basic_auth_users": {"grafana": other}})
        for _ in range(250):
            if exporter.state.config.users.keys() == {"grafana"}:
                break
            await asyncio.sleep(0.02)
        assert (await exporter.get(user=("grafana", "new")))[0] == 200
        assert (await exporter.get(user=("prometheus", PASSWORD)))[0] == 401
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1
        assert str(path) in errors[0].getMessage()
    finally:
        watch.cancel()


async def test_tls_cannot_be_turned_off_by_a_reload(pki: Pki, serve, caplog):
    path = pki.dir / "web.yml"
    exporter = await serve(_write(path, {"tls_server_config": _tls(pki)}))
    watch = asyncio.create_task(exporter.state.watch(poll_s=0.02))
    try:
        _write(path, {"basic_auth_users": {"prometheus": HASH}})
        for _ in range(250):
            if any("needs a restart" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.02)
        assert any("needs a restart" in r.getMessage() for r in caplog.records)
        assert (await exporter.get(context=pki.client_context()))[0] == 200
    finally:
        watch.cancel()
