"""Shared fixtures: the simulator is the main fake, used as the exporter would use pynvml."""

from __future__ import annotations

import pytest

from migexporter.sim import FakeNvml, Fleet


@pytest.fixture
def fleet() -> Fleet:
    """The default simulated fleet; a module may override it (for example with a test clock)."""
    return Fleet.default()


@pytest.fixture
def nv(fleet: Fleet) -> FakeNvml:
    """A fake pynvml over ``fleet``, already initialised."""
    fake = FakeNvml(fleet)
    fake.nvmlInit()
    return fake
