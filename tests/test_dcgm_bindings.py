"""Finding DCGM's bindings: search order, and one clear line for every way it can fail."""

from __future__ import annotations

import sys

import pytest

from migexporter.backends import dcgm_bindings
from migexporter.backends.dcgm_bindings import DcgmNotFoundError, find, load

LIBRARY_NOT_FOUND = -25


@pytest.fixture(autouse=True)
def _isolated_imports(monkeypatch):
    """Each test imports its own flat binding modules; put sys.path and sys.modules back."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    saved = {name: sys.modules.pop(name) for name in dcgm_bindings.MODULES if name in sys.modules}
    yield
    for name in dcgm_bindings.MODULES:
        sys.modules.pop(name, None)
    sys.modules.update(saved)


def write_bindings(directory, *, major=4, init_error=None, broken=False):
    """Tiny stand-ins for NVIDIA's loose modules, enough for the loader's checks."""
    directory.mkdir(parents=True, exist_ok=True)
    structs = [
        "import dcgmvalue",
        "class DCGMError(Exception):",
        "    def __init__(self, value):",
        "        super().__init__(f'DCGM error {value}')",
        "        self.value = value",
        "def _dcgmInit(libDcgmPath=None):",
        f"    raise DCGMError({init_error})" if init_error is not None else "    pass",
    ]
    if major == 4:
        structs.append("DCGM_GROUP_MAX_ENTITIES_V2 = 1024")
    if broken:
        structs.append("def broken(:")
    (directory / "dcgm_structs.py").write_text("\n".join(structs) + "\n")
    (directory / "dcgmvalue.py").write_text("")
    (directory / "dcgm_fields.py").write_text("")
    (directory / "dcgm_agent.py").write_text("import dcgm_structs\n")
    # As in NVIDIA's modules: a cycle that only resolves when pydcgm is imported first.
    (directory / "DcgmHandle.py").write_text(
        "import pydcgm\nimport dcgm_agent\nclass DcgmHandle: pass\n"
    )
    (directory / "pydcgm.py").write_text("from DcgmHandle import *\n")
    return directory


def test_explicit_directory_wins_over_environment_and_install_paths(tmp_path, monkeypatch):
    """--dcgm-bindings beats MIGEXPORTER_DCGM_BINDINGS, which beats the install paths."""
    flag, env, installed = (write_bindings(tmp_path / n) for n in ("flag", "env", "installed"))
    monkeypatch.setattr(dcgm_bindings, "INSTALL_PATHS", (installed,))
    environ = {dcgm_bindings.ENV_VARIABLE: str(env)}
    assert find(str(flag), environ) == flag
    assert find(None, environ) == env
    assert find(None, {}) == installed


def test_dcgm_4_install_path_is_tried_before_dcgm_3(tmp_path, monkeypatch):
    """With both installed, the DCGM 4 bindings are picked."""
    four, three = write_bindings(tmp_path / "4"), write_bindings(tmp_path / "3", major=3)
    monkeypatch.setattr(dcgm_bindings, "INSTALL_PATHS", (four, three))
    assert find(None, {}) == four
    monkeypatch.setattr(dcgm_bindings, "INSTALL_PATHS", (tmp_path / "none", three))
    assert find(None, {}) == three


def test_missing_bindings_name_every_place_looked(tmp_path, monkeypatch):
    """No bindings anywhere: one line naming the install paths and how to point at them."""
    paths = (tmp_path / "dcgm4", tmp_path / "dcgm3")
    monkeypatch.setattr(dcgm_bindings, "INSTALL_PATHS", paths)
    with pytest.raises(DcgmNotFoundError) as caught:
        find(None, {})
    message = str(caught.value)
    assert all(str(p) in message for p in paths)
    assert "--dcgm-bindings" in message
    assert "\n" not in message


def test_explicit_directory_without_bindings_is_refused(tmp_path):
    """A directory that holds no dcgm_structs.py is named in the error."""
    with pytest.raises(DcgmNotFoundError, match=f"no DCGM Python bindings in {tmp_path}"):
        find(str(tmp_path), {})


def test_loaded_modules_come_from_the_chosen_directory(tmp_path):
    """Same-named modules imported from another directory earlier are replaced."""
    first, second = write_bindings(tmp_path / "a"), write_bindings(tmp_path / "b")
    load(str(first), {})
    bindings = load(str(second), {})
    assert bindings.path == second
    assert bindings.major == 4
    assert bindings.structs.__file__ == str(second / "dcgm_structs.py")
    assert sys.modules["pydcgm"].__file__ == str(second / "pydcgm.py")


def test_missing_library_names_the_library_and_where_it_was_sought(tmp_path):
    """Bindings without libdcgm.so.4: the line names the library and the directories."""
    bindings = write_bindings(tmp_path / "bindings", init_error=LIBRARY_NOT_FOUND)
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    with pytest.raises(DcgmNotFoundError) as caught:
        load(str(bindings), {"LD_LIBRARY_PATH": str(lib_dir)})
    message = str(caught.value)
    assert "libdcgm.so.4 is not in" in message
    assert str(lib_dir) in message
    assert str(bindings) in message


@pytest.mark.parametrize(("bindings_major", "library_major"), [(4, 3), (3, 4)])
def test_major_version_mismatch_names_both_sides(tmp_path, bindings_major, library_major):
    """DCGM 4 bindings next to a DCGM 3 library (and the reverse) say which is which."""
    bindings = write_bindings(
        tmp_path / "bindings", major=bindings_major, init_error=LIBRARY_NOT_FOUND
    )
    lib_dir = tmp_path / "lib"
    lib_dir.mkdir()
    (lib_dir / f"libdcgm.so.{library_major}").write_bytes(b"")
    with pytest.raises(DcgmNotFoundError) as caught:
        load(str(bindings), {"LD_LIBRARY_PATH": str(lib_dir)})
    message = str(caught.value)
    assert f"DCGM {bindings_major} bindings in {bindings} need libdcgm.so.{bindings_major}" in (
        message
    )
    assert f"{lib_dir}/libdcgm.so.{library_major} (DCGM {library_major})" in message


def test_bindings_that_fail_to_import_give_one_line(tmp_path):
    """A broken install is reported with the directory and the Python error, no traceback."""
    bindings = write_bindings(tmp_path / "bindings", broken=True)
    with pytest.raises(DcgmNotFoundError) as caught:
        load(str(bindings), {})
    assert f"DCGM bindings in {bindings} cannot be imported: SyntaxError" in str(caught.value)
    assert "\n" not in str(caught.value)
