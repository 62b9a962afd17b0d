"""Settings from flags, ``MIGEXPORTER_*`` environment variables and an optional YAML file.

Each option is defined once, in ``OPTIONS``, with its parser, default and help. A value given
as a flag wins over the environment, which wins over the file, which wins over the default.
Every problem becomes one ``ConfigError`` line naming where the bad value came from.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import yaml

from migexporter import compat
from migexporter.pods import DEFAULT_SOCKET

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

DEFAULT_PORT = 9945  # not dcgm-exporter's 9400 nor nvidia_gpu_exporter's 9835
ENV_PREFIX = "MIGEXPORTER_"
BACKENDS = ("auto", "dcgm", "nvml")
LOG_LEVELS = ("debug", "info", "warning", "error")
MIN_INTERVAL_S = 0.01  # the DCGM backend raises anything under its 100 ms floor, with a warning


class ConfigError(Exception):
    """A setting is invalid; the message is one line meant for the operator.

    Messages quote what the operator gave, which may hold line breaks or other control
    characters: those are escaped, so the message stays one printable line.
    """

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


def one_line(text: str) -> str:
    """``text`` with every non-printable character (newlines included) escaped."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


@dataclass(frozen=True)
class Config:
    """The exporter's settings once parsed and validated."""

    listen: tuple[str, int] = ("", DEFAULT_PORT)
    backend: str = "auto"
    simulate: str | None = None
    dcgm_bindings: str | None = None
    dcgm_address: str | None = None
    interval: float = 1.0
    topology_refresh: float = 10.0
    pod_resources_socket: str | None = DEFAULT_SOCKET  # None: pod attribution off
    pod_refresh: float = 10.0
    pod_max_age: float = 60.0
    log_level: str = "info"
    web_config: str | None = None
    compat: tuple[str, ...] = ()
    config: str | None = None


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``:PORT`` or ``[V6]:PORT`` -> (host, port); an empty host means all."""
    match = re.fullmatch(
        r"(?:\[(?P<v6>[0-9a-fA-F:.]+)\]|(?P<host>[^:\[\]]*)):(?P<port>\d{1,5})", text
    )
    if not match or int(match["port"]) > 65535:
        raise ValueError(f"{text!r} is not HOST:PORT (for example :9945 or 127.0.0.1:9945)")
    return match["v6"] or match["host"], int(match["port"])


def parse_duration(text: str) -> float:
    """Seconds from ``1``, ``1.5``, ``500ms``, ``10s`` or ``2m``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*", text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (for example 1, 0.5, 500ms, 10s, 2m)")
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match[2]]
    return float(match[1]) * scale


def _bounded(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        seconds = parse_duration(text)
        if not low <= seconds <= high:
            raise ValueError(f"{text!r} must be between {low:g}s and {high:g}s")
        return seconds

    return parse


def _choice(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text.lower() not in choices:
            raise ValueError(f"{text!r} is not one of {', '.join(choices)}")
        return text.lower()

    return parse


def parse_dcgm_address(text: str) -> str:
    """``HOST[:PORT]`` of an nv-hostengine, or the absolute path of its unix socket."""
    text = text.strip()
    if text.startswith("/"):
        return text
    if not re.fullmatch(r"(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?", text):
        raise ValueError(
            f"{text!r} is not HOST[:PORT] or a unix socket path "
            "(for example 127.0.0.1:5555 or /tmp/nv-hostengine)"
        )
    return text


def _directory(text: str) -> str:
    if not Path(text).is_dir():
        raise ValueError(f"{text!r} is not a directory")
    return text


def _path(text: str) -> str:
    if not text.strip():
        raise ValueError("must not be empty")
    return text.strip()


def _socket_path(text: str) -> str | None:
    text = text.strip()
    if text.lower() in {"", "off", "none", "false"}:
        return None
    if not text.startswith("/"):
        raise ValueError(f"{text!r} is not an absolute path (or 'off')")
    return text


def _simulate(text: str) -> str:
    text = text.strip()
    if not text:
        raise ValueError("must not be empty (use 'default' for the default fleet)")
    return "default" if text.lower() in {"1", "true", "yes", "on"} else text


def _compat(text: str) -> tuple[str, ...]:
    """Compat profile names from a comma list, in order, each once; 'off' or empty for none."""
    names = [n.strip().lower() for n in text.split(",") if n.strip()]
    if names in ([], ["off"], ["none"]):
        return ()
    unknown = [n for n in names if n not in compat.PROFILES]
    if unknown:
        raise ValueError(f"{unknown[0]!r} is not one of {', '.join(compat.PROFILES)} (or off)")
    return tuple(dict.fromkeys(names))


@dataclass(frozen=True)
class Option:
    """One setting: its key (config field and YAML key), flag, parser and help."""

    key: str
    parse: Callable[[str], Any]
    help: str
    metavar: str = ""

    @property
    def flag(self) -> str:
        """The command-line flag, e.g. ``--topology-refresh``."""
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        """The environment variable, e.g. ``MIGEXPORTER_TOPOLOGY_REFRESH``."""
        return ENV_PREFIX + self.key.upper()


OPTIONS: tuple[Option, ...] = (
    Option(
        "listen",
        parse_listen,
        f"address to serve on, HOST:PORT; empty host means all interfaces (:{DEFAULT_PORT})",
        "HOST:PORT",
    ),
    Option(
        "backend",
        _choice(BACKENDS),
        "measurement backend: auto picks DCGM when its bindings load and a host engine "
        "answers, else NVML (auto)",
        "|".join(BACKENDS),
    ),
    Option(
        "simulate",
        _simulate,
        "serve a simulated fleet instead of real GPUs: 'default', a fleet spec such as "
        "'h100-80gb:3g.40gb+1g.10gb*4,a100-40gb', or a YAML scenario file",
        "SPEC|FILE",
    ),
    Option(
        "dcgm_bindings",
        _directory,
        "directory of DCGM's Python bindings (default: the DCGM 4, then DCGM 3 install path)",
        "DIR",
    ),
    Option(
        "dcgm_address",
        parse_dcgm_address,
        "nv-hostengine to connect to, HOST[:PORT] or a unix socket path "
        "(default: an embedded host engine)",
        "ADDRESS",
    ),
    Option(
        "interval",
        _bounded(MIN_INTERVAL_S, 3600),
        "how often to sample GPUs and MIG instances, e.g. 1s or 500ms (1s)",
        "DURATION",
    ),
    Option(
        "topology_refresh",
        _bounded(MIN_INTERVAL_S, 86400),
        "how often to re-enumerate GPUs and MIG instances even without a MIG event (10s)",
        "DURATION",
    ),
    Option(
        "pod_resources_socket",
        _socket_path,
        "the kubelet's pod-resources socket, for namespace/pod/container labels on MIG instances "
        f"and XIDs; 'off' disables them ({DEFAULT_SOCKET}; off by itself where it is absent)",
        "PATH|off",
    ),
    Option(
        "pod_refresh",
        _bounded(0.1, 3600),
        "how often to ask the kubelet which pods hold which devices (10s)",
        "DURATION",
    ),
    Option(
        "pod_max_age",
        _bounded(0.1, 86400),
        "how long the last answer still labels series once the kubelet stops answering; "
        "at least --pod-refresh (60s)",
        "DURATION",
    ),
    Option(
        "web_config",
        _path,
        "exporter-toolkit web configuration (TLS, basic auth, headers), as every Prometheus "
        "exporter takes it; re-read when it changes (none: plain HTTP)",
        "FILE",
    ),
    Option(
        "compat",
        _compat,
        "also serve another exporter's metric names, units and labels, from the same samples: "
        f"{', '.join(compat.PROFILES)}; repeat the flag or give a comma list (off)",
        "PROFILE[,PROFILE]",
    ),
    Option("log_level", _choice(LOG_LEVELS), "log verbosity (info)", "|".join(LOG_LEVELS)),
)
_BY_KEY = {option.key: option for option in OPTIONS}
_FLAGS = frozenset({*(option.flag for option in OPTIONS), "--config", "--version", "--help", "-h"})


class OneLineParser(argparse.ArgumentParser):
    """argparse that raises instead of printing usage and exiting, so errors stay one line."""

    def error(self, message: str) -> NoReturn:
        """Raise the message for the caller to print on one line."""
        raise ConfigError(message)


def build_parser(version: str, epilog: str = "") -> argparse.ArgumentParser:
    """The serve command's flags, all defaulting to "not given"; ``epilog`` ends its help."""
    parser = OneLineParser(
        prog="migexporter",
        description="Prometheus exporter for NVIDIA MIG instances.",
        epilog=epilog,
        argument_default=argparse.SUPPRESS,
        allow_abbrev=False,  # --simulat is a typo, not --simulate
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="FILE", help="YAML file with any of the settings")
    for option in OPTIONS:
        extra: dict[str, Any] = {
            "simulate": {"nargs": "?", "const": "default"},
            "compat": {"action": "append"},
        }.get(option.key, {})
        parser.add_argument(
            option.flag, dest=option.key, metavar=option.metavar, help=option.help, **extra
        )
    parser.add_argument("--version", action="version", version=f"migexporter {version}")
    return parser


def load_file(path: str) -> dict[str, str]:
    """Settings from a YAML mapping, as strings for the option parsers."""
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"config file {path}: {error.strerror}") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"config file {path}: not UTF-8 text (byte {error.start})") from error
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "not valid YAML"
        raise ConfigError(f"config file {path}{where}: {problem}") from error
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path}: expected a mapping of settings")
    settings: dict[str, str] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in _BY_KEY:
            raise ConfigError(
                f"config file {path}: unknown setting {key!r} "
                f"(known: {', '.join(o.key for o in OPTIONS)})"
            )
        text = _setting_text(path, key, name, value)
        if text is not None:
            settings[name] = text
    return settings


def _setting_text(path: str, key: object, name: str, value: object) -> str | None:
    """One YAML value as the text its option parses; None where it leaves the default."""
    if value is None or (value is False and name == "simulate"):
        return None
    if name == "compat" and isinstance(value, list) and all(isinstance(v, str) for v in value):
        return ",".join(value)  # a YAML list of profiles, as the flag repeated
    if isinstance(value, (dict, list)):
        raise ConfigError(f"config file {path}: {key} must be a single value")
    return "default" if value is True and name == "simulate" else str(value)


def parse_config(
    argv: Sequence[str], environ: Mapping[str, str], version: str = "", epilog: str = ""
) -> Config:
    """Merge flags, environment and file into a validated Config.

    Raises:
        ConfigError: with one line naming the source and the problem.
    """
    given = vars(build_parser(version, epilog).parse_args(_values_attached(argv)))
    if "compat" in given:  # --compat repeated: one comma list, as in the environment
        given["compat"] = ",".join(given["compat"])
    config_path = given.pop("config", None) or environ.get(ENV_PREFIX + "CONFIG") or None
    layers: list[tuple[str, Mapping[str, str]]] = [
        (f"config file {config_path}: ", load_file(config_path) if config_path else {}),
        ("", {o.key: environ[o.env] for o in OPTIONS if o.env in environ}),
        ("", given),
    ]
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for prefix, layer in layers:
        for key, text in layer.items():
            option = _BY_KEY[key]
            source = prefix + key if prefix else (option.flag if layer is given else option.env)
            try:
                values[key] = option.parse(text)
            except ValueError as error:
                raise ConfigError(f"{source}: {error}") from error
            sources[key] = (
                "on the command line"
                if layer is given
                else f"from {config_path}"
                if prefix
                else f"from {option.env}"
            )
    known = {f.name for f in fields(Config)}
    config = Config(config=config_path, **{k: v for k, v in values.items() if k in known})
    if config.pod_max_age < config.pod_refresh:

        def said(key: str, seconds: float) -> str:
            return f"--{key.replace('_', '-')} {seconds:g}s ({sources.get(key, 'the default')})"

        raise ConfigError(
            f"{said('pod_max_age', config.pod_max_age)} is shorter than "
            f"{said('pod_refresh', config.pod_refresh)}: every map would age out before the next"
        )
    return config


def _values_attached(argv: Sequence[str]) -> list[str]:
    """``argv`` with a value that starts with '-' (``--interval -1s``) attached to its flag.

    argparse would take such a value for a flag and say "expected one argument"; attached, it
    reaches the option's own parser, which says what is wrong with it.
    """
    takes_value = {o.flag for o in OPTIONS if o.key != "simulate"} | {"--config"}
    out: list[str] = []
    args = iter(argv)
    for arg in args:
        if arg in takes_value:
            value = next(args, None)
            if value == "--":  # argparse would drop it and hand the option an empty list
                raise ConfigError(f"{arg}: expected one argument")
            if value is not None and value.startswith("-") and value not in _FLAGS:
                out.append(f"{arg}={value}")
                continue
            out.append(arg)
            if value is not None:
                out.append(value)
            continue
        out.append(arg)
    return out
