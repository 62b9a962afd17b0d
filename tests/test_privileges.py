"""Which features the process's privileges leave out, from its uid and effective capabilities."""

from __future__ import annotations

from migexporter.privileges import DCGM_NEEDS_ROOT, NEED_ADMIN, features_off, has_sys_admin

# /proc/self/status lines: every capability, none, and CAP_SYS_ADMIN (bit 21) alone.
ALL = "Name:\tx\nCapEff:\t000001ffffffffff\n"
NONE = "Name:\tx\nCapEff:\t0000000000000000\n"
SYS_ADMIN = f"Name:\tx\nCapEff:\t{1 << 21:016x}\n"
OTHERS = f"Name:\tx\nCapEff:\t{((1 << 41) - 1) & ~(1 << 21):016x}\n"  # all but CAP_SYS_ADMIN


def test_root_has_everything():
    assert has_sys_admin(NONE, euid=0)
    assert features_off(NONE, euid=0) == []


def test_cap_sys_admin_alone_is_nvmls_privileged_user_but_not_root():
    assert has_sys_admin(SYS_ADMIN, euid=1000)
    assert features_off(SYS_ADMIN, euid=1000) == [DCGM_NEEDS_ROOT]
    assert has_sys_admin(ALL, euid=1000)


def test_without_cap_sys_admin_the_privileged_features_are_off():
    assert not has_sys_admin(NONE, euid=1000)
    assert not has_sys_admin(OTHERS, euid=1000)  # every other capability does not help
    assert not has_sys_admin("Name:\tno capability line\n", euid=1000)
    assert features_off(OTHERS, euid=1000) == [*NEED_ADMIN, DCGM_NEEDS_ROOT]


def test_the_dcgm_root_requirement_is_named_only_for_an_embedded_host_engine():
    assert features_off(SYS_ADMIN, euid=1000, embedded_dcgm=False) == []
