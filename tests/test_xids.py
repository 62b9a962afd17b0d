"""The XID catalog: every XID the issue names, NVIDIA's action for each, our severity."""

from __future__ import annotations

import pytest

from migexporter import xids
from migexporter.xids import CATALOG, Severity, describe

REQUIRED = (13, 31, 43, 45, 48, 61, 62, 63, 64, 68, 69, 74, 79, 92, 94, 95, 109, 119, 120, 154)
ACTIONS = {  # NVIDIA's immediate-action buckets, and the workflow names it uses for some XIDs
    "RESTART_APP",
    "RESET_GPU",
    "RESTART_BM",
    "IGNORE",
    "CONTACT_SUPPORT",
    "XID_154",
}


@pytest.mark.parametrize("code", REQUIRED)
def test_required_xids_are_described_with_a_source(code):
    row = CATALOG[code]
    assert row.code == code
    assert row.mnemonic
    assert row.description
    assert row.action in ACTIONS or row.action.startswith("WORKFLOW_")
    assert row.source.startswith("https://docs.nvidia.com/")


def test_the_pager_gets_double_bit_ecc_stopped_gpus_and_lost_gpus():
    """48 and 43 page as the project promises; 79 (off the bus) and uncontained errors too."""
    assert {43, 48, 79, 95, 119, 120} <= set(xids.PAGE_XIDS)
    assert set(xids.PAGE_XIDS) == {c for c, r in CATALOG.items() if r.severity is Severity.PAGE}


def test_application_faults_are_not_paged():
    """A tenant's bad pointer (31) or exception (13) is the workload owner's, not a page."""
    assert CATALOG[31].severity is Severity.INFO
    assert CATALOG[13].severity is Severity.INFO


def test_an_unknown_xid_is_described_with_action_unknown():
    row = describe(4242)
    assert (row.code, row.action, row.severity) == (4242, "unknown", Severity.TICKET)
    assert describe(48) is CATALOG[48]


def test_mnemonics_are_unique():
    assert len({r.mnemonic for r in CATALOG.values()}) == len(CATALOG)
