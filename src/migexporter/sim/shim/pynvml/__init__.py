"""``import pynvml`` under ``migexporter sim run``: the simulated module in place of the real one.

``migexporter sim run`` puts the folder holding this package first on the child's PYTHONPATH.
Importing it takes that folder off ``sys.path`` again, imports the real nvidia-ml-py (whose names
the simulated module carries), and leaves the simulated module in ``sys.modules["pynvml"]``,
which is what the ``import`` statement that got here then binds.
"""

import sys
from pathlib import Path

_SHIM = Path(__file__).resolve().parents[1]
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != _SHIM]
del sys.modules["pynvml"]

from migexporter.sim import runner  # noqa: E402  (imports the real pynvml first)

runner.install_from_environment()
