"""Backend names -> implementations (the one place that maps a name to a class)."""

from __future__ import annotations

from testbed.shaping.base import Backend
from testbed.shaping.emu import EmuBackend
from testbed.shaping.netem import NetemBackend


def make_backend(name: str) -> Backend:
    if name == "emu":
        return EmuBackend()
    if name == "netem":
        return NetemBackend(kernel_has_netem=False)
    raise ValueError(f"unknown backend {name!r}")
