"""Whether user-mode-linux can run here is found by booting a guest, not by finding the binary:
on some host kernels every guest's init dies at once (this VM's Firecracker 6.18 kernel: all
UML tests failed with `Attempted to kill init! exitcode=0x0000000b`). The probe's answer is
consistent with a real router's boot, and it leaves no process behind."""

from __future__ import annotations

import os

import pytest

from testbed.shaping.uml import UML, probe_boot, uml_why_not
from tests.conftest import ROOT
from tests.system.conftest import run_cli

pytestmark = pytest.mark.skipif(not os.path.exists(UML), reason="user-mode-linux is not installed")


def _uml_processes() -> list[int]:
    found = []
    for name in os.listdir("/proc"):
        try:
            exe = os.readlink(f"/proc/{name}/exe") if name.isdigit() else ""
        except OSError:
            continue
        if exe.endswith("linux.uml"):
            found.append(int(name))
    return found


def test_the_probe_boots_a_guest_or_says_why_and_leaves_nothing() -> None:
    before = set(_uml_processes())
    why_not = probe_boot()
    assert why_not is None or why_not.startswith("user-mode-linux is installed but cannot boot")
    assert set(_uml_processes()) <= before
    assert uml_why_not() == why_not  # the remembered answer is this host's


def test_doctor_and_the_netem_backend_say_it() -> None:
    doctor = run_cli("doctor")
    why_not = uml_why_not()
    assert (why_not or "boots a guest") in doctor.stdout, doctor.stdout
    if why_not is not None:  # this kernel has no sch_netem: asking for netem says why not
        res = run_cli(
            "up", str(ROOT / "topologies" / "p2p.yaml"), "--backend", "netem", "--name", "tup0"
        )
        assert res.returncode == 2 and why_not in res.stderr, res.stderr
