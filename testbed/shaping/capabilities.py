"""What this kernel offers, found by trying it in a scratch namespace, and the backend choice.

The scratch namespace carries the run's prefix, is recorded in its own ledger before it is
made, and is removed before the probe returns.
"""

from __future__ import annotations

import ctypes
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from testbed.net import netns
from testbed.net.ledger import Ledger
from testbed.net.nsenter import enter_netns, in_netns


@dataclass(frozen=True)
class Capability:
    name: str
    ok: bool
    detail: str


def _qdisc(ns: str, kind: str, **kw: object) -> Capability:
    from pyroute2 import NetNS
    from pyroute2.netlink.exceptions import NetlinkError

    try:
        with NetNS(ns) as n:
            lo = n.link_lookup(ifname="lo")[0]
            n.tc("add", kind, index=lo, **kw)
            n.tc("del", kind, index=lo, **kw)
        return Capability(f"qdisc {kind}", True, "tc qdisc add works")
    except NetlinkError as e:
        msg = os.strerror(e.code) if e.code else str(e)
        unknown = " (Specified qdisc kind is unknown)" if e.code == 2 else ""
        return Capability(f"qdisc {kind}", False, f"{msg}{unknown}")


def _tun(ns: str) -> Capability:
    from testbed.shaping.emu_io import open_tun

    if not os.path.exists("/dev/net/tun"):
        return Capability("TUN", False, "/dev/net/tun is missing")
    try:
        with in_netns(ns):
            fd = open_tun(f"{ns[:10]}tn")
            os.close(fd)
        return Capability("TUN", True, "/dev/net/tun opens, TUNSETIFF works")
    except OSError as e:
        return Capability("TUN", False, str(e))


def _nftables(ns: str) -> Capability:
    nft = shutil.which("nft")
    if nft is None:
        return Capability("nftables", False, "nft not installed (apt-get install nftables)")
    proc = subprocess.run(
        [nft, "add", "table", "inet", "tbprobe"],
        preexec_fn=lambda: enter_netns(ns),
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        return Capability("nftables", False, proc.stderr.strip() or "nft failed")
    return Capability("nftables", True, "nft add table works")


def _realtime() -> Capability:
    try:
        with open("/proc/sys/kernel/sched_rt_runtime_us") as f:
            runtime = f.read().strip()
    except OSError:
        runtime = "?"
    try:
        pid = os.fork()
        if pid == 0:
            try:
                os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(50))
                os._exit(0)
            except OSError:
                os._exit(1)
        _, status = os.waitpid(pid, 0)
        ok = os.waitstatus_to_exitcode(status) == 0
    except OSError:
        ok = False
    return Capability(
        "SCHED_FIFO", ok, f"{'granted' if ok else 'refused'}; RT runtime {runtime} us per second"
    )


def timer_lateness_us(samples: int = 200, sleep_us: int = 1000) -> tuple[float, float]:
    """p50/p99 lateness of select() sleeps with 1 ns timer slack (what the emulator uses)."""
    libc = ctypes.CDLL(None, use_errno=True)
    old = libc.prctl(30, 0, 0, 0, 0)  # PR_GET_TIMERSLACK
    libc.prctl(29, 1, 0, 0, 0)
    late = []
    try:
        for _ in range(samples):
            t0 = time.monotonic_ns()
            select.select([], [], [], sleep_us / 1e6)
            late.append((time.monotonic_ns() - t0) / 1000 - sleep_us)
    finally:
        libc.prctl(29, old, 0, 0, 0)
    late.sort()
    return late[len(late) // 2], late[int(len(late) * 0.99)]


@contextmanager
def scratch_netns(run: str) -> Iterator[str]:
    """A namespace '<run>--doctor' to try things in, recorded in its own ledger, always removed."""
    ns = f"{run}--doctor"
    ledger = Ledger(ns)
    ledger.lock()
    try:
        ledger.undo()  # a previous probe that crashed
        netns.create(ledger, ns)
        yield ns
    finally:
        ledger.undo()
        ledger.unlock()
        ledger.remove_state()


def probe_kernel(run: str) -> list[Capability]:
    """Try each feature for real in a scratch namespace."""
    with scratch_netns(run) as ns:
        caps = [
            _qdisc(ns, "netem", delay=1000),
            _qdisc(ns, "htb", handle="1:", default=0x10),
            _qdisc(ns, "tbf", rate="10mbit", burst=20000, latency=50000),
            _tun(ns),
            _nftables(ns),
        ]
    caps.append(_realtime())
    return caps


def kernel_has_netem(run: str) -> bool:
    with scratch_netns(run) as ns:
        return _qdisc(ns, "netem", delay=1000).ok
