"""Settings: flags beat environment beat file beat defaults; every bad value is one clear line."""

from __future__ import annotations

import pytest

from migexporter.config import OPTIONS, Config, ConfigError, parse_config, parse_duration


def test_defaults_when_nothing_is_given():
    """With no flags, env or file, the documented defaults apply."""
    assert parse_config([], {}) == Config()
    assert Config().listen == ("", 9945)


def test_flags_beat_environment_which_beats_the_file(tmp_path):
    """The same setting from three places resolves in the documented order."""
    path = tmp_path / "c.yaml"
    path.write_text("interval: 5s\ntopology-refresh: 30\nlog_level: debug\n")
    env = {"MIGEXPORTER_INTERVAL": "2", "MIGEXPORTER_CONFIG": str(path)}
    config = parse_config(["--interval", "250ms"], env)
    assert config.interval == 0.25
    assert config.topology_refresh == 30.0
    assert config.log_level == "debug"
    assert parse_config([], env).interval == 2.0


@pytest.mark.parametrize(
    ("text", "seconds"), [("1", 1.0), ("0.5", 0.5), ("500ms", 0.5), ("10s", 10.0), ("2m", 120.0)]
)
def test_durations(text, seconds):
    """Durations accept plain seconds and ms/s/m suffixes."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("argv", "env", "fragment"),
    [
        (["--interval", "5ms"], {}, "--interval: '5ms' must be between 0.01s and 3600s"),
        (["--interval", "fast"], {}, "--interval: 'fast' is not a duration"),
        (["--listen", "9945"], {}, "--listen: '9945' is not HOST:PORT"),
        (["--listen", ":70000"], {}, "--listen"),
        (["--backend", "cuda"], {}, "--backend: 'cuda' is not one of auto, dcgm, nvml"),
        ([], {"MIGEXPORTER_LOG_LEVEL": "loud"}, "MIGEXPORTER_LOG_LEVEL: 'loud'"),
        (["--no-such-flag"], {}, "unrecognized arguments: --no-such-flag"),
        (["--dcgm-address", "tcp://x"], {}, "--dcgm-address: 'tcp://x' is not HOST[:PORT]"),
        ([], {"MIGEXPORTER_DCGM_BINDINGS": "/nonexistent"}, "MIGEXPORTER_DCGM_BINDINGS: '/nonex"),
        (["--config", "/nonexistent/x.yaml"], {}, "config file /nonexistent/x.yaml: No such file"),
    ],
)
def test_bad_values_name_their_source(argv, env, fragment):
    """An invalid setting raises one line that says where it came from."""
    with pytest.raises(ConfigError) as caught:
        parse_config(argv, env)
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("interval: [1, 2]\n", "interval must be a single value"),
        ("- a\n- b\n", "expected a mapping"),
        ("intervall: 1\n", "unknown setting 'intervall'"),
        ("interval: 1\n  bad: indent\n", "line 2"),
        ("interval: 0\n", "config file"),
    ],
)
def test_bad_config_files(tmp_path, content, fragment):
    """A broken YAML file is reported with the file name and the problem, on one line."""
    path = tmp_path / "c.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        parse_config(["--config", str(path)], {})
    assert fragment in str(caught.value)
    assert str(path) in str(caught.value)


def test_simulate_takes_an_optional_spec(tmp_path):
    """--simulate alone means the default fleet; a spec or file is passed through."""
    assert parse_config(["--simulate"], {}).simulate == "default"
    assert parse_config(["--simulate", "a30:4g.24gb"], {}).simulate == "a30:4g.24gb"
    assert parse_config([], {"MIGEXPORTER_SIMULATE": "true"}).simulate == "default"
    path = tmp_path / "c.yaml"
    path.write_text("simulate: true\n")
    assert parse_config(["--config", str(path)], {}).simulate == "default"


def test_listen_forms():
    """Listen accepts host:port, :port and bracketed IPv6."""
    assert parse_config(["--listen", "127.0.0.1:0"], {}).listen == ("127.0.0.1", 0)
    assert parse_config(["--listen", ":9000"], {}).listen == ("", 9000)
    assert parse_config(["--listen", "[::1]:9000"], {}).listen == ("::1", 9000)


def test_every_option_has_unique_help_and_env():
    """Help texts are not copied between options, so each flag documents itself."""
    helps = [option.help for option in OPTIONS]
    assert len(set(helps)) == len(helps)
    assert all(option.env.startswith("MIGEXPORTER_") for option in OPTIONS)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:5555", "127.0.0.1:5555"),
        ("gpu-node-1", "gpu-node-1"),
        ("[::1]:5555", "[::1]:5555"),
        (" /run/nvidia/hostengine.sock ", "/run/nvidia/hostengine.sock"),
    ],
)
def test_dcgm_address_forms(address, expected):
    """A host engine is named by HOST[:PORT] or by its unix socket path."""
    assert parse_config(["--dcgm-address", address], {}).dcgm_address == expected


def test_dcgm_bindings_directory_from_environment(tmp_path):
    """The bindings directory can come from MIGEXPORTER_DCGM_BINDINGS."""
    env = {"MIGEXPORTER_DCGM_BINDINGS": str(tmp_path)}
    assert parse_config([], env).dcgm_bindings == str(tmp_path)


def test_the_pod_max_age_error_names_both_settings_and_where_each_came_from() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(["--pod-max-age", "5s"], {"MIGEXPORTER_POD_REFRESH": "20s"})
    assert str(raised.value).startswith(
        "--pod-max-age 5s (on the command line) is shorter than "
        "--pod-refresh 20s (from MIGEXPORTER_POD_REFRESH)"
    )
