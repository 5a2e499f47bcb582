"""Backend names -> implementations (the one place that maps a name to a class)."""

from __future__ import annotations

from testbed.shaping.base import Backend
from testbed.shaping.emu import EmuBackend
from testbed.shaping.netem import NetemBackend
from testbed.shaping.uml import UmlNetemBackend


def make_backend(name: str) -> Backend:
    """`netem-uml` is netem inside a user-mode-linux router (kernels without sch_netem)."""
    if name == "emu":
        return EmuBackend()
    if name == "netem-uml":
        return UmlNetemBackend()
    if name == "netem":
        return NetemBackend(kernel_has_netem=True)
    raise ValueError(f"unknown backend {name!r}")
