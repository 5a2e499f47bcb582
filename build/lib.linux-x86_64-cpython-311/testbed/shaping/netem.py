"""Backend `netem` on a kernel that has sch_netem: one netem qdisc per direction, on the egress
of the link's router namespace (uplink on the interface toward between[1], downlink on the one
toward between[0]); the router forwards plainly. The parameters are netem_params(), the same
the user-mode-linux router (uml.py) applies, which is where they are tested on these machines
(this kernel has no sch_netem). pyroute2 sets the qdisc; `loss gemodel`, which pyroute2 cannot
express, goes through the tc CLI.
"""

from __future__ import annotations

import subprocess
import time
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
        info: dict[str, Any] = {"backend": "netem", "where": "router namespace", "tc": params.tc_args(),
                                "start_mono_ns": time.monotonic_ns()}  # fmt: skip
        if plan.spec.schedule is not None:
            info["scheduler_pid"] = self._start_scheduler(plan, ledger)
        return info

    def _start_scheduler(self, plan: DirectionPlan, ledger: Ledger) -> int:
        """The process that changes the qdisc at segment boundaries (recorded, ended by pid)."""
        import json
        import sys

        from testbed.net.ledger import process_start_ticks

        pidfile = plan.log_dir / f"netem-schedule-{plan.tag}.pid"
        entry = ledger.record("process", pid=None, start_ticks=None, pidfile=str(pidfile),
                              what=f"netem scheduler {plan.tag}", link=True)  # fmt: skip
        proc = subprocess.Popen(
            [sys.executable, "-m", "testbed.shaping.netem_schedule", "--netns", plan.router_ns,
             "--dev", plan.out_ifname, "--spec", json.dumps(plan.spec.to_dict()), "--pidfile",
             str(pidfile)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        ledger.update(entry, pid=proc.pid, start_ticks=process_start_ticks(proc.pid))
        return proc.pid
