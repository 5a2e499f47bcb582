"""Backend `emu`: the userspace TUN link emulator (see emu_process.py for the process itself).

In the link's router namespace, packets arriving on the direction's input interface are sent by
a policy rule to a routing table whose only route is the direction's TUN device; the emulator
process reads them there, and writes each back into the same TUN when its time comes; arriving
from the TUN, they follow the main table out of the router.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time
from typing import Any

from testbed.config import TopologySpec
from testbed.errors import KernelError, UnavailableError
from testbed.net import names
from testbed.net.ledger import Ledger, process_start_ticks
from testbed.net.shaper import DirectionPlan

READY_TIMEOUT_S = 15.0
TABLE_BASE = 100
TUN_TXQUEUELEN = 10000


CHILDREN: list[subprocess.Popen[bytes]] = []  # the emulators this process started


class EmuBackend:
    name = "emu"

    def __init__(
        self,
        rt_priority: int = 50,
        wake_quantile: float | None = None,
        loop: str = "compiled",
        release_tick_us: float = 0.0,
    ) -> None:
        self.rt_priority = rt_priority
        self.wake_quantile = wake_quantile  # None: the emulator's default
        self.loop = loop  # compiled, or python: the reference loop (benchmarks compare them)
        self.release_tick_us = release_tick_us  # 0: every release on time (see emu_process)

    def check(self, topology: TopologySpec) -> None:
        if not os.path.exists("/dev/net/tun"):
            raise UnavailableError(
                "backend emu needs /dev/net/tun (the TUN driver); load it with "
                "`modprobe tun`, or use --backend netem on a kernel with sch_netem"
            )

    def install(self, plan: DirectionPlan, ledger: Ledger) -> dict[str, Any]:
        tun = names.ifname(plan.run, plan.link_index, "up" if plan.direction == "uplink" else "dn")
        pidfile = plan.log_dir / f"emu-{plan.tag}.pid"
        errfile = plan.log_dir / f"emu-{plan.tag}.err"
        plan.stats_path.unlink(missing_ok=True)  # a previous run's, under the same name
        entry = ledger.record(
            "process", pidfile=str(pidfile), what=f"emulator {plan.tag}", link=True
        )
        read_fd, write_fd = os.pipe()
        cmd = [
            sys.executable,
            "-m",
            "testbed.shaping.emu_process",
            "--netns",
            plan.router_ns,
            "--tun",
            tun,
            "--spec",
            _spec_json(plan),
            "--seed",
            str(plan.seed),
            "--log",
            str(plan.log_path),
            "--stats",
            str(plan.stats_path),
            "--pidfile",
            str(pidfile),
            "--ready-fd",
            str(write_fd),
            "--rt-priority",
            str(self.rt_priority),
            "--header",
            _header_json(plan),
        ]
        tick = max(self.release_tick_us, plan.tick_us)
        cmd += ["--loop", self.loop, "--release-tick-us", str(tick)]
        if self.wake_quantile is not None:
            cmd += ["--wake-quantile", str(self.wake_quantile)]
        with open(errfile, "w") as err:
            proc = subprocess.Popen(
                cmd,
                pass_fds=(write_fd,),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )
        os.close(write_fd)
        CHILDREN.append(proc)  # kept, so its exit status waits for Network.died() to read it
        ledger.update(entry, pid=proc.pid, start_ticks=process_start_ticks(proc.pid))
        try:
            line = _read_line(read_fd, READY_TIMEOUT_S)
        finally:
            os.close(read_fd)
        if not line.startswith("ready"):
            detail = errfile.read_text().strip().splitlines()[-3:]
            raise KernelError(
                f"link emulator {plan.tag} did not start ({line or 'no ready signal'}): "
                + " | ".join(detail)
            )
        _route_into_tun(plan, tun)
        _, start_mono, start_real = line.split()
        return {
            "backend": "emu",
            "pid": proc.pid,
            "tun": tun,
            "log": str(plan.log_path),
            "stats": str(plan.stats_path),
            "start_mono_ns": int(start_mono),
            "start_real_ns": int(start_real),
        }


def _spec_json(plan: DirectionPlan) -> str:
    import json

    return json.dumps(plan.spec.to_dict())


def _header_json(plan: DirectionPlan) -> str:
    import json

    return json.dumps({"run": plan.run, "link": plan.link, "direction": plan.direction})


def _read_line(fd: int, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    data = b""
    while b"\n" not in data:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return ""
        chunk = os.read(fd, 256)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def _route_into_tun(plan: DirectionPlan, tun: str) -> None:
    from pyroute2 import NetNS
    from pyroute2.netlink.exceptions import NetlinkError

    table = TABLE_BASE + (0 if plan.direction == "uplink" else 1)
    try:
        with NetNS(plan.router_ns) as ns:
            tun_index = ns.link_lookup(ifname=tun)[0]
            ns.link("set", index=tun_index, txqlen=TUN_TXQUEUELEN)
            ns.link("set", index=tun_index, state="up")
            # If the emulator dies, its TUN and this route vanish: the blackhole below then
            # drops the traffic instead of letting it bypass the emulated link unshaped.
            ns.route("add", dst="0.0.0.0/0", type="blackhole", table=table, priority=4096)
            ns.route("add", dst="0.0.0.0/0", oif=tun_index, table=table, priority=1)
            ns.rule("add", iifname=plan.in_ifname, table=table, priority=table)
    except (NetlinkError, IndexError) as e:
        raise KernelError(f"routing {plan.tag} into {tun} in {plan.router_ns} failed: {e}") from e
