"""``--web-config``: the exporter-toolkit web configuration every Prometheus exporter accepts.

The YAML format is the one of prometheus/exporter-toolkit (``tls_server_config``,
``http_server_config.headers``, ``basic_auth_users`` with bcrypt hashes), so operators reuse the
file they already have. What Python's ``ssl`` or aiohttp cannot honour is refused with one line
naming the key, never ignored. Relative file names are relative to the configuration file.

The file and the files it names are watched: a change is applied to new connections and
requests (certificate rotation without a restart); a change that does not load is logged and
the last good configuration stays.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import logging
import re
import ssl
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bcrypt
import yaml

from migexporter.config import ConfigError

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Mapping

    from aiohttp import web
    from aiohttp.typedefs import Middleware

log = logging.getLogger(__name__)

# exporter-toolkit's client_auth_type values that Python's ssl can honour. It verifies every
# certificate it asks for, so "request without verifying" has no equivalent.
CLIENT_AUTH = {
    "NoClientCert": ssl.CERT_NONE,
    "VerifyClientCertIfGiven": ssl.CERT_OPTIONAL,
    "RequireAndVerifyClientCert": ssl.CERT_REQUIRED,
}
UNVERIFIED_CLIENT_AUTH = ("RequestClientCert", "RequireAnyClientCert")
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
# The response headers exporter-toolkit lets a configuration set.
HEADERS = (
    "Content-Security-Policy",
    "X-Frame-Options",
    "X-Content-Type-Options",
    "X-XSS-Protection",
    "Strict-Transport-Security",
)
BCRYPT_HASH = re.compile(rb"\$2[aby]\$\d\d\$[./A-Za-z0-9]{53}")
# Checked for an unknown user, so that a wrong user name costs the same as a wrong password.
_DECOY_HASH = bcrypt.hashpw(b"decoy", bcrypt.gensalt(10))
REALM = 'Basic realm="migexporter", charset="UTF-8"'
# Paths a kubelet or load balancer probes without credentials; they tell nothing but up/ready.
UNAUTHENTICATED_PATHS = frozenset({"/-/healthy", "/-/ready"})
POLL_S = 5.0  # how often the file and the files it names are looked at for changes


@dataclass(frozen=True)
class Tls:
    """``tls_server_config`` once checked; file names are absolute."""

    cert_file: str
    key_file: str
    client_auth: ssl.VerifyMode = ssl.CERT_NONE
    client_ca_file: str | None = None
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2
    max_version: ssl.TLSVersion = ssl.TLSVersion.MAXIMUM_SUPPORTED

    def files(self) -> tuple[str, ...]:
        """Every file the settings read."""
        return tuple(f for f in (self.cert_file, self.key_file, self.client_ca_file) if f)

    def context(self) -> ssl.SSLContext:
        """A server context with these settings; ConfigError when a file does not load."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = self.min_version
        context.maximum_version = self.max_version
        named = (("cert_file", self.cert_file), ("key_file", self.key_file))
        for key, path in (*named, ("client_ca_file", self.client_ca_file)):
            if path:
                try:  # OpenSSL's errors do not say which file: name the one that cannot be read
                    Path(path).open("rb").close()
                except OSError as error:
                    raise ConfigError(f"{key} {path}: {error.strerror}") from error
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
            if self.client_ca_file:
                context.load_verify_locations(self.client_ca_file)
        except (OSError, ssl.SSLError) as error:
            raise ConfigError(f"TLS certificate, key or client CA: {_reason(error)}") from error
        context.verify_mode = self.client_auth
        return context


@dataclass(frozen=True)
class WebConfig:
    """A loaded web configuration; the empty one serves plain HTTP to anyone."""

    path: str | None = None
    tls: Tls | None = None
    users: Mapping[str, bytes] = field(default_factory=dict)  # user -> bcrypt hash
    headers: Mapping[str, str] = field(default_factory=dict)
    # The server context of ``tls``, built (certificates loaded) once, by ``load``.
    context: ssl.SSLContext | None = field(default=None, compare=False, repr=False)

    def files(self) -> tuple[str, ...]:
        """The configuration file and every file it names."""
        own = (self.path,) if self.path else ()
        return own + (self.tls.files() if self.tls else ())


def load(path: str) -> WebConfig:
    """Read and check a web configuration file, and build its TLS context (loading the files).

    Raises:
        ConfigError: one line naming the file and the problem.
    """
    try:
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except OSError as error:
            raise ConfigError(error.strerror or str(error)) from error
        except UnicodeDecodeError as error:
            raise ConfigError(f"not UTF-8 text (byte {error.start})") from error
        except yaml.YAMLError as error:
            raise ConfigError(
                f"not valid YAML: {getattr(error, 'problem', '') or error}"
            ) from error
        config = _parse(path, {} if data is None else data)
        if config.tls is not None:
            config = replace(config, context=config.tls.context())
    except ConfigError as error:
        raise ConfigError(f"web config {path}: {error}") from error
    return config


def _parse(path: str, data: object) -> WebConfig:
    top = _mapping(
        data, "the file", ("tls_server_config", "http_server_config", "basic_auth_users")
    )
    base = Path(path).resolve().parent
    tls = None
    if top.get("tls_server_config") is not None:
        tls = _tls(_mapping(top["tls_server_config"], "tls_server_config", _TLS_KEYS), base)
    headers: dict[str, str] = {}
    if top.get("http_server_config") is not None:
        http = _mapping(top["http_server_config"], "http_server_config", ("headers", "http2"))
        if http.get("http2") is True:
            raise ConfigError("http_server_config.http2: HTTP/2 is not served; remove it")
        for name, value in _mapping(http.get("headers") or {}, "headers", HEADERS).items():
            headers[name] = _text(value, f"headers.{name}")
    users: dict[str, bytes] = {}
    for user, hashed in _mapping(top.get("basic_auth_users") or {}, "basic_auth_users").items():
        encoded = _text(hashed, f"basic_auth_users.{user}").encode()
        if not BCRYPT_HASH.fullmatch(encoded):
            raise ConfigError(f"basic_auth_users.{user}: not a bcrypt hash ($2a$, $2b$ or $2y$)")
        users[str(user)] = encoded
    return WebConfig(path, tls, users, headers)


_TLS_KEYS = (
    "cert_file",
    "key_file",
    "client_auth_type",
    "client_ca_file",
    "min_version",
    "max_version",
    "prefer_server_cipher_suites",
)
# Keys of exporter-toolkit's TLS settings that Python's ssl cannot honour as written.
_TLS_REFUSED = {
    "cert": "inline certificates are not supported; use cert_file",
    "key": "inline keys are not supported; use key_file",
    "client_ca": "an inline client CA is not supported; use client_ca_file",
    "cipher_suites": "Go's cipher-suite names have no equivalent in Python's ssl; remove it",
    "curve_preferences": "Python's ssl cannot set curve preferences; remove it",
    "client_allowed_sans": "client certificate SAN filtering is not supported; remove it",
}


def _tls(settings: dict[str, Any], base: Path) -> Tls:
    for key in ("cert_file", "key_file"):
        if not settings.get(key):
            raise ConfigError(f"tls_server_config.{key} is required")
    auth_name = str(settings.get("client_auth_type") or "NoClientCert")
    if auth_name in UNVERIFIED_CLIENT_AUTH:
        raise ConfigError(
            f"tls_server_config.client_auth_type {auth_name}: Python's ssl verifies every client "
            "certificate it asks for; use VerifyClientCertIfGiven or RequireAndVerifyClientCert"
        )
    if auth_name not in CLIENT_AUTH:
        known = ", ".join(CLIENT_AUTH)
        raise ConfigError(f"tls_server_config.client_auth_type {auth_name!r} is not one of {known}")
    client_ca = settings.get("client_ca_file")
    if CLIENT_AUTH[auth_name] != ssl.CERT_NONE and not client_ca:
        raise ConfigError(f"tls_server_config.client_auth_type {auth_name} needs client_ca_file")
    versions = {
        key: _version(settings.get(key), key, default)
        for key, default in (("min_version", "TLS12"), ("max_version", "TLS13"))
    }
    if versions["min_version"] > versions["max_version"]:
        raise ConfigError("tls_server_config: min_version is above max_version")
    return Tls(
        cert_file=str(base / _text(settings["cert_file"], "cert_file")),
        key_file=str(base / _text(settings["key_file"], "key_file")),
        client_auth=CLIENT_AUTH[auth_name],
        client_ca_file=str(base / _text(client_ca, "client_ca_file")) if client_ca else None,
        min_version=versions["min_version"],
        max_version=versions["max_version"],
    )


def _version(value: object, key: str, default: str) -> ssl.TLSVersion:
    name = str(value or default)
    if name not in TLS_VERSIONS:
        raise ConfigError(
            f"tls_server_config.{key} {name!r} is not one of {', '.join(TLS_VERSIONS)}"
        )
    return TLS_VERSIONS[name]


def _mapping(value: object, where: str, known: tuple[str, ...] | None = None) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a mapping")
    for key in value:
        if where == "tls_server_config" and key in _TLS_REFUSED:
            raise ConfigError(f"tls_server_config.{key}: {_TLS_REFUSED[key]}")
        if known is not None and key not in known:
            raise ConfigError(f"{where}: unknown key {key!r} (known: {', '.join(known)})")
    return value


def _text(value: object, where: str) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        raise ConfigError(f"{where}: expected a string")
    return str(value)


def _reason(error: OSError | ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    return f"{error.filename}: {error.strerror}" if error.filename else str(error)


class WebState:
    """The configuration in force, and the TLS context the listener was started with.

    The listener's context never changes; each new connection is switched, during its
    handshake, to the context of the configuration in force, so a rotated certificate is used
    from the next connection on.
    """

    def __init__(self, config: WebConfig) -> None:
        self.config = config
        # The first context serves as the listener's; it switches every connection to the
        # context in force, itself until a reload brings another.
        self.listener = self._current = config.context
        if self.listener is not None:
            self.listener.sni_callback = self._switch
        self._verified: set[bytes] = set()
        self._stamps = _stamps(config.files())

    def _switch(self, connection: ssl.SSLObject, _name: str | None, _ctx: object) -> None:
        if self._current is not None:
            connection.context = self._current

    def apply(self, config: WebConfig) -> None:
        """Put a loaded configuration in force; ConfigError when it cannot be applied live."""
        if (config.tls is None) != (self.config.tls is None):
            raise ConfigError("turning TLS on or off needs a restart")
        if config.tls is not None and self.listener is not None:
            assert config.context is not None  # built by load with the tls settings
            # Verification settings are the connection's own, copied from the listener.
            self.listener.verify_mode = config.tls.client_auth
            self.listener.minimum_version = config.tls.min_version
            self.listener.maximum_version = config.tls.max_version
            if config.tls.client_ca_file:
                self.listener.load_verify_locations(config.tls.client_ca_file)
            self._current = config.context
        self.config = config
        self._verified.clear()

    async def watch(self, poll_s: float = POLL_S) -> None:
        """Reload when the file or a file it names changes; keep the last good one on error."""
        path = self.config.path
        if path is None:
            return
        while True:
            await asyncio.sleep(poll_s)
            stamps = await asyncio.to_thread(_stamps, self.config.files())
            if stamps == self._stamps:
                continue
            self._stamps = stamps
            try:
                config = await asyncio.to_thread(load, path)
                self.apply(config)
            except ConfigError as error:
                # One line, no traceback: the message names the file and the problem.
                log.error("%s; keeping the last good web configuration", error)  # noqa: TRY400
                continue
            log.info("web config %s reloaded", path)

    async def authorized(self, header: str | None) -> bool:
        """Whether an Authorization header holds a configured user and password."""
        users = self.config.users
        if not users:
            return True
        if not header or not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        hashed = users.get(user, _DECOY_HASH)
        key = hashlib.sha256(b"\0".join((user.encode(), hashed, password.encode()))).digest()
        if key in self._verified:
            return True
        # bcrypt takes tens of milliseconds by design: off the event loop, and cached once right.
        good = await asyncio.to_thread(bcrypt.checkpw, password.encode(), hashed)
        if good and user in users:
            self._verified.add(key)
            return True
        return False


def middleware(state: WebState) -> Middleware:
    """Aiohttp middleware: basic auth where users are configured, and the configured headers."""
    from aiohttp import web  # noqa: PLC0415  (aiohttp only where a server runs)

    @web.middleware
    async def check(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        headers = state.config.headers
        if request.path not in UNAUTHENTICATED_PATHS and not await state.authorized(
            request.headers.get("Authorization")
        ):
            raise web.HTTPUnauthorized(
                text="401 Unauthorized\n", headers={"WWW-Authenticate": REALM, **headers}
            )
        try:
            response = await handler(request)
        except web.HTTPException as error:
            error.headers.update(headers)
            raise
        response.headers.update(headers)
        return response

    return check


def _stamps(files: tuple[str, ...]) -> tuple[tuple[str, float, int] | None, ...]:
    """(name, mtime, size) of each file, None where it cannot be read: what a change changes."""
    out: list[tuple[str, float, int] | None] = []
    for name in files:
        try:
            stat = Path(name).stat()
        except OSError:
            out.append(None)
        else:
            out.append((name, stat.st_mtime, stat.st_size))
    return tuple(out)
