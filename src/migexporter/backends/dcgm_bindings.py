"""Find and import DCGM's Python bindings: loose modules from NVIDIA's packages, not on PyPI.

The bindings are flat top-level modules that import each other by name, so their directory
goes on ``sys.path``. Each major version loads only its own ``libdcgm.so.N``, so a DCGM 4
bindings directory next to a DCGM 3 library fails; the error says which was found where.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Mapping
    from types import ModuleType

ENV_VARIABLE = "MIGEXPORTER_DCGM_BINDINGS"
INSTALL_PATHS = (
    Path("/usr/share/datacenter-gpu-manager-4/bindings/python3"),  # DCGM 4
    Path("/usr/local/dcgm/bindings/python3"),  # DCGM 3
)
# Import order matters only for clearer errors: the leaves first.
MODULES = ("dcgmvalue", "dcgm_fields", "dcgm_structs", "dcgm_agent", "pydcgm", "DcgmHandle")
_LIBRARY_NOT_FOUND = -25  # DCGM_ST_LIBRARY_NOT_FOUND


class DcgmNotFoundError(Exception):
    """DCGM cannot be used; the message is one line naming what was found where."""


@dataclass(frozen=True)
class DcgmBindings:
    """The imported binding modules and where they came from."""

    path: Path
    major: int  # 4 or 3: which libdcgm.so.N the bindings load
    structs: Any
    fields: Any
    value: Any
    agent: Any
    pydcgm: Any


def find(explicit: str | None, environ: Mapping[str, str]) -> Path:
    """The bindings directory: ``explicit``, then the environment, then the install paths.

    Raises:
        DcgmNotFoundError: when no candidate holds ``dcgm_structs.py``.
    """
    chosen = explicit or environ.get(ENV_VARIABLE)
    if chosen:
        path = Path(chosen)
        if not (path / "dcgm_structs.py").is_file():
            raise DcgmNotFoundError(f"no DCGM Python bindings in {path} (no dcgm_structs.py)")
        return path
    for path in INSTALL_PATHS:
        if (path / "dcgm_structs.py").is_file():
            return path
    looked = ", ".join(str(p) for p in INSTALL_PATHS)
    raise DcgmNotFoundError(
        f"DCGM Python bindings not found in {looked}: install datacenter-gpu-manager-4-core "
        f"or point --dcgm-bindings / {ENV_VARIABLE} at them"
    )


def load(explicit: str | None = None, environ: Mapping[str, str] | None = None) -> DcgmBindings:
    """Import the bindings and load ``libdcgm``; every failure is one DcgmNotFoundError line."""
    env = os.environ if environ is None else environ
    path = find(explicit, env)
    modules = _import(path)
    structs = modules["dcgm_structs"]
    # Only the 4.x bindings define the 1024-entity group limit.
    major = 4 if hasattr(structs, "DCGM_GROUP_MAX_ENTITIES_V2") else 3
    try:
        structs._dcgmInit()  # noqa: SLF001  (the bindings' own loader: DcgmHandle calls it too)
    except structs.DCGMError as error:
        if getattr(error, "value", None) == _LIBRARY_NOT_FOUND:
            raise DcgmNotFoundError(_library_problem(path, major, env)) from error
        raise DcgmNotFoundError(f"DCGM bindings in {path} failed to initialise: {error}") from error
    return DcgmBindings(
        path=path,
        major=major,
        structs=structs,
        fields=modules["dcgm_fields"],
        value=modules["dcgmvalue"],
        agent=modules["dcgm_agent"],
        pydcgm=modules["pydcgm"],
    )


def _import(path: Path) -> dict[str, ModuleType]:
    """Import the flat modules from ``path``, dropping copies imported from elsewhere."""
    resolved = str(path.resolve())
    for name in MODULES:
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None) or ""
        if module is not None and str(Path(origin).resolve().parent) != resolved:
            del sys.modules[name]
    if resolved not in sys.path:
        sys.path.insert(0, resolved)
    try:
        return {name: importlib.import_module(name) for name in MODULES}
    except Exception as error:  # a broken install can raise anything at import time
        raise DcgmNotFoundError(
            f"DCGM bindings in {path} cannot be imported: {type(error).__name__}: {error}"
        ) from error


def _library_dirs(environ: Mapping[str, str]) -> list[Path]:
    """Where the bindings' ``_LoadDcgmLibrary`` looks, in its order."""
    dirs = [Path(p) for p in environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    return [*dirs, Path(f"/usr/lib/{platform.machine()}-linux-gnu"), Path("/usr/lib64")]


def _library_problem(path: Path, major: int, environ: Mapping[str, str]) -> str:
    dirs = _library_dirs(environ)
    found = sorted(
        candidate
        for directory in dirs
        if directory.is_dir()
        for candidate in directory.glob("libdcgm.so.*")
        if re.fullmatch(r"libdcgm\.so\.\d+", candidate.name)
    )
    wanted = f"libdcgm.so.{major}"
    same = [str(f) for f in found if f.name == wanted]
    if same:
        return f"DCGM {major} bindings in {path}: {same[0]} exists but cannot be loaded"
    if found:
        other = found[0]
        return (
            f"DCGM {major} bindings in {path} need {wanted}, but only {other} "
            f"(DCGM {other.name.rsplit('.', 1)[-1]}) is installed: "
            "use the bindings of the same DCGM version"
        )
    looked = ", ".join(str(d) for d in dirs)
    return f"DCGM {major} bindings in {path} found, but {wanted} is not in {looked}"
