"""The shaper interface: a backend shapes one direction of one link inside its router namespace.

The network builder makes the namespaces, veths and addresses; for each direction it hands the
backend a DirectionPlan saying where packets of that direction enter the router and what the
LinkSpec is. The bottleneck queue thus always sits in the path (the router namespace), never in
the sending host, where the kernel would push back on the sending socket instead of dropping.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from testbed.config import LinkSpec, TopologySpec
from testbed.net.ledger import Ledger


@dataclass(frozen=True)
class DirectionPlan:
    """One direction of one link, as the backend needs it."""

    run: str
    link: str
    link_index: int
    direction: str  # "uplink" (between[0] -> between[1]) or "downlink"
    router_ns: str
    in_ifname: str  # the router interface this direction's packets arrive on
    out_ifname: str  # the router interface they leave by
    spec: LinkSpec
    seed: int
    log_dir: Path
    tick_us: float = 0.0  # the topology's emulator_tick_us (emu only)

    @property
    def tag(self) -> str:
        return f"{self.link}-{self.direction}"

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"link-{self.tag}.log"

    @property
    def stats_path(self) -> Path:
        return self.log_dir / f"link-{self.tag}.stats.json"


class Backend(Protocol):
    """A way to shape links. `check` runs before anything is created."""

    name: str

    def check(self, topology: TopologySpec) -> None:
        """Raise UnavailableError (saying why and what would work) if this machine cannot."""
        ...

    def install(self, plan: DirectionPlan, ledger: Ledger) -> dict[str, Any]:
        """Shape one direction; record everything created in the ledger first. Returns info."""
        ...
