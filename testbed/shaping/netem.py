"""Backend `netem`: kernel tc/netem on the router's egress. Not built yet (issue #3).

It slots in beside `emu` through the same Backend interface. Until it exists, asking for it is
a clear error, and `auto` picks `emu`.
"""

from __future__ import annotations

from typing import Any

from testbed.config import TopologySpec
from testbed.errors import UnavailableError
from testbed.net.ledger import Ledger
from testbed.shaping.base import DirectionPlan

IMPLEMENTED = False


class NetemBackend:
    name = "netem"

    def __init__(self, kernel_has_netem: bool) -> None:
        self.kernel_has_netem = kernel_has_netem

    def check(self, topology: TopologySpec) -> None:
        self.ensure_available()

    def ensure_available(self) -> None:
        kernel = (
            "this kernel has sch_netem"
            if self.kernel_has_netem
            else "this kernel has no sch_netem ('Specified qdisc kind is unknown')"
        )
        raise UnavailableError(
            f"backend netem is not available: it is not built in this version yet, and {kernel}; "
            "use --backend emu (the userspace emulator; same LinkSpec)"
        )

    def install(self, plan: DirectionPlan, ledger: Ledger) -> dict[str, Any]:
        raise UnavailableError("backend netem is not available in this version; use emu")
