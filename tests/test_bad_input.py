"""Property-based tests of bad input: flags, environment, config files and web-config files.

Whatever the input, the outcome is a Config or one ConfigError line, never another exception;
and where it is an error, the command prints that one line and exits 2 before serving.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from unittest import mock

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from migexporter import cli, webconfig
from migexporter.config import OPTIONS, ConfigError, parse_config

FLAGS = [o.flag for o in OPTIONS] + ["--config", "--nonsense", "-x", "--"]
# Text the option parsers see: plausible values, edge cases and arbitrary unicode.
VALUES = st.one_of(
    st.sampled_from(
        ["", " ", "0", "-1", "1e9", "nan", "inf", "10s", "5m", "1h", ":", ":0", ":65536",
         "[::1]:9945", "127.0.0.1:9945", "auto", "dcgm", "NVML", "off", "/", "/nonexistent",
         "h100-80gb:3g.40gb", "a100-40gb:9g.99gb", "true", "\x00", "\n", "😀", "%s", "{}"]
    ),
    st.text(max_size=40),
)  # fmt: skip
ARGV = st.lists(st.one_of(st.sampled_from(FLAGS), VALUES), max_size=8)
# What YAML can hold: the shapes a hand-edited config file takes.
YAML_DATA = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=20)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.sampled_from([o.key for o in OPTIONS]), st.text(max_size=12)),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=12,
)
RUNS = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _outcome(argv: list[str], environ: dict[str, str]) -> ConfigError | None:
    """The ConfigError of these settings, or None when they are valid; nothing else escapes."""
    try:
        parse_config(argv, environ)
    except ConfigError as error:
        return error
    return None


def _web_config_is_loaded_or_one_line(path: Path) -> None:
    error = None
    try:
        webconfig.load(str(path))
    except ConfigError as caught:
        error = caught
    assert error is None or str(error).isprintable()


def _exits_with_one_line(argv: list[str], environ: dict[str, str]) -> None:
    """An invalid input: the command prints one line and exits 2 (it never starts serving)."""
    stderr = io.StringIO()
    with (
        mock.patch.dict(os.environ, environ, clear=True),
        contextlib.redirect_stderr(stderr),
        mock.patch.object(cli, "serve", side_effect=AssertionError("served bad input")),
    ):
        assert cli.main(argv) == cli.EXIT_USAGE
    lines = stderr.getvalue().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("migexporter: error: ")


@RUNS
@given(argv=ARGV)
def test_any_flags_are_a_config_or_one_error_line(argv: list[str]) -> None:
    argv = [a for a in argv if a not in {"-h", "--help", "--version"}]
    error = _outcome(argv, {})
    if error is not None:
        assert str(error).isprintable()
        _exits_with_one_line(argv, {})


@RUNS
@given(values=st.dictionaries(st.sampled_from([o.env for o in OPTIONS]), VALUES, max_size=4))
def test_any_environment_is_a_config_or_one_error_line(values: dict[str, str]) -> None:
    values = {k: v for k, v in values.items() if "\x00" not in v}  # not representable in env
    error = _outcome([], values)
    if error is not None:
        assert str(error).isprintable()
        _exits_with_one_line([], values)


@RUNS
@given(data=YAML_DATA)
def test_any_config_file_is_a_config_or_one_error_line(data: object) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.yaml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        error = _outcome(["--config", str(path)], {})
        if error is not None:
            assert str(error).isprintable()
            _exits_with_one_line(["--config", str(path)], {})


@RUNS
@given(raw=st.binary(max_size=200))
def test_any_bytes_as_a_config_file_are_a_config_or_one_error_line(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "config.yaml"
        path.write_bytes(raw)
        error = _outcome(["--config", str(path)], {})
        if error is not None:
            assert str(error).isprintable()


@RUNS
@given(data=YAML_DATA)
def test_any_web_config_file_loads_or_is_one_error_line(data: object) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "web.yml"
        path.write_text(yaml.safe_dump(data), encoding="utf-8")
        _web_config_is_loaded_or_one_line(path)


@RUNS
@given(raw=st.binary(max_size=200))
def test_any_bytes_as_a_web_config_file_load_or_are_one_error_line(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "web.yml"
        path.write_bytes(raw)
        _web_config_is_loaded_or_one_line(path)
