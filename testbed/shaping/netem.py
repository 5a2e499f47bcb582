"""Backend `netem` on a kernel that has sch_netem: one netem qdisc per direction, on the egress
of the link's router namespace (uplink on the interface toward between[1], downlink on the one
toward between[0]); the router forwards plainly. The parameters are netem_params(), the same
the user-mode-linux router (uml.py) applies, which is where they are tested on these machines
(this kernel has no sch_netem). pyroute2 sets the qdisc; `loss gemodel`, which pyroute2 cannot
express, goes through the tc CLI.
"""

from __future__ import annotations

import subprocess
from typing import Any

from testbed.config import TopologySpec
from testbed.errors import KernelError, UnavailableError
from testbed.net.ledger import Ledger
from testbed.net.nsenter import enter_netns
from testbed.net.shaper import DirectionPlan
from testbed.shaping.netem_params import netem_params


class NetemBackend:
    name = "netem"

    def __init__(self, kernel_has_netem: bool) -> None:
        self.kernel_has_netem = kernel_has_netem

    def check(self, topology: TopologySpec) -> None:
        self.ensure_available()
        for link in topology.links:
            netem_params(link.uplink)
            netem_params(link.downlink)

    def ensure_available(self) -> None:
        if not self.kernel_has_netem:
            raise UnavailableError(
                "this kernel has no sch_netem ('Specified qdisc kind is unknown'); "
                "--backend netem then runs netem in a user-mode-linux router, or use --backend emu"
            )

    def install(self, plan: DirectionPlan, ledger: Ledger) -> dict[str, Any]:
        from pyroute2 import NetNS
        from pyroute2.netlink.exceptions import NetlinkError

        params = netem_params(plan.spec)
        # the qdisc lives in the router namespace, which the ledger removes with it
        try:
            if params.gemodel_pct is None:
                with NetNS(plan.router_ns) as ns:
                    index = ns.link_lookup(ifname=plan.out_ifname)[0]
                    ns.tc("add", "netem", index=index, handle="1:", **params.pyroute2_kwargs())
            else:
                cmd = [
                    "tc",
                    "qdisc",
                    "add",
                    "dev",
                    plan.out_ifname,
                    "root",
                    "netem",
                    *params.tc_args(),
                ]
                subprocess.run(cmd, check=True, capture_output=True, text=True,
                               preexec_fn=lambda: enter_netns(plan.router_ns))  # fmt: skip
        except (NetlinkError, subprocess.CalledProcessError) as e:
            raise KernelError(f"netem on {plan.out_ifname} in {plan.router_ns}: {e}") from e
        return {"backend": "netem", "where": "router namespace", "tc": params.tc_args()}
