"""Backend `netem` on a kernel without sch_netem: the link's router is a user-mode-linux kernel.

Debian's `user-mode-linux` runs a Linux kernel as an ordinary process, and that kernel has
sch_netem. Per link: a UML process started inside the link's namespace with two TAP devices
(eth0 toward between[0], eth1 toward between[1]); the TAPs are then moved into the hosts'
namespaces. Inside, a generated init script (the guest sees the host's filesystem read-only)
loads sch_netem, routes between 10.77.2i.0/24 and 10.77.2i+1.0/24 as the emu router does, and
puts the SAME netem configuration on each egress: uplink on eth1, downlink on eth0 (tc CLI
inside the guest: `loss gemodel` has no pyroute2 form). It prints TB-READY on its console.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from testbed.config import LinkDef, LinkSpec, TopologySpec
from testbed.errors import KernelError, UnavailableError
from testbed.net import names, netns
from testbed.net.ledger import process_start_ticks
from testbed.net.nsenter import enter_netns
from testbed.net.shaper import DirectionPlan
from testbed.shaping.netem_params import netem_params

UML = "/usr/bin/linux.uml"
BOOT_TIMEOUT_S = 40.0
READY = "TB-READY"


PROBE_MARK = "TB-UML-BOOTS"
PROBE_TIMEOUT_S = 20.0
_why_not: list[str | None] = []  # this process's answer, once asked


def uml_available() -> bool:
    """user-mode-linux is installed and boots a guest on this host (uml_why_not says why not)."""
    return uml_why_not() is None


def uml_why_not() -> str | None:
    """None when a UML guest boots here; otherwise why not, in words. The boot is tried once per
    host boot (a few seconds) and remembered in ~/.cache/rtc-testbed/uml-boot.json: installed is
    not enough, since on some host kernels every guest's init dies at once (seen: Firecracker
    6.18.44, `Attempted to kill init! exitcode=0x0000000b`, SIGSEGV, even for /bin/true)."""
    if not _why_not:
        _why_not.append(_probe_cached())
    return _why_not[0]


def _probe_cached() -> str | None:
    if not os.path.exists(UML):
        return "user-mode-linux is not installed: `apt-get install user-mode-linux kmod` (make setup does)"
    if shutil.which("tc") is None:
        return "tc (iproute2) is not installed"
    key = _boot_key()
    cache = (
        Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        / "rtc-testbed"
        / "uml-boot.json"
    )
    try:
        saved = json.loads(cache.read_text())
        if saved.get("key") == key:
            return saved.get("why_not")  # type: ignore[no-any-return]
    except (OSError, ValueError):
        pass
    why_not = probe_boot()
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "why_not": why_not}))
    except OSError:
        pass  # a read-only home: ask again next time
    return why_not


def _boot_key() -> str:
    """This host boot, this kernel, this UML binary: a cached answer holds while they do."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "?"
    st = os.stat(UML)
    return f"{boot} {os.uname().release} {st.st_size} {st.st_mtime_ns}"


def probe_boot(timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Boot a UML guest whose init prints a mark and powers off: None if the mark appears,
    else why not (its console's telling line). The process is ours, ended by its pid."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="rtc-testbed-uml-probe-") as tmp:
        init = Path(tmp) / "init.sh"
        init.write_text(f"#!/bin/sh\necho {PROBE_MARK}\nmount -t proc proc /proc\n"
                        "echo o > /proc/sysrq-trigger\nexec sleep 5\n")  # fmt: skip
        init.chmod(0o755)
        console = Path(tmp) / "console"
        with open(console, "wb") as out:
            proc = subprocess.Popen([UML, "mem=64M", "rootfstype=hostfs", "rootflags=/", "ro",
                                     f"init={init}", "con=null", "con0=null,fd:1",
                                     f"uml_dir={tmp}/uml"], stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True)  # fmt: skip
            ticks = process_start_ticks(proc.pid) or 0
            try:
                deadline = time.monotonic() + timeout_s
                while time.monotonic() < deadline and proc.poll() is None:
                    if PROBE_MARK in console.read_text(errors="replace"):
                        break
                    time.sleep(0.1)
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                _end_session(proc.pid, ticks)
        text = console.read_text(errors="replace")
    if PROBE_MARK in text:
        return None
    lines = [ln.strip() for ln in text.splitlines()]
    said = [ln for ln in lines if "Kernel panic" in ln] or [ln for ln in lines if "kill init" in ln]
    why = said[0] if said else f"no guest came up within {timeout_s:g} s"
    return f"user-mode-linux is installed but cannot boot a guest on this host kernel ({why})"


def _end_session(sid: int, leader_ticks: int) -> None:
    """UML's helper processes share the probe's session: end them by pid (never by pattern)."""
    from testbed.net.ledger import end_process, session_members

    for pid, ticks in session_members(sid, leader_ticks):
        end_process(pid, ticks, grace_s=0.5)


def schedule_loop(dev: str, spec: LinkSpec) -> str:
    """The guest's scheduler for one scheduled egress (testbed.shaping.netem_schedule, from the
    host's own venv through hostfs), started in the background; its console lines say when it
    started and when each change landed."""
    spec_json = shlex.quote(json.dumps(spec.to_dict()))
    return (f"{shlex.quote(sys.executable)} -m testbed.shaping.netem_schedule --dev {dev} "
            f"--spec {spec_json} &\n")  # fmt: skip


def init_script(link: LinkDef, link_index: int) -> str:
    """The guest's /sbin/init: modules, addresses, forwarding, one netem per egress (changed at
    each segment boundary of a scheduled direction)."""
    net_a, net_b = names.link_subnets(link_index)
    up = " ".join(shlex.quote(a) for a in netem_params(link.uplink).tc_args())
    down = " ".join(shlex.quote(a) for a in netem_params(link.downlink).tc_args())
    loops = "".join(schedule_loop(dev, spec) for dev, spec in (("eth1", link.uplink), ("eth0", link.downlink))
                    if spec.schedule is not None)  # fmt: skip
    return f"""#!/bin/sh
# generated by rtc-testbed for link {link.name}: uplink {link.between[0]} -> {link.between[1]}
mount -t proc proc /proc
mount -t sysfs sys /sys
insmod /usr/lib/uml/modules/$(uname -r)/kernel/net/sched/sch_netem.ko || exit 1
ip link set lo up
ip addr add {net_a}.{names.ROUTER_OCTET}/24 dev eth0
ip addr add {net_b}.{names.ROUTER_OCTET}/24 dev eth1
ip link set eth0 up
ip link set eth1 up
echo 1 > /proc/sys/net/ipv4/ip_forward
tc qdisc add dev eth1 root netem {up} || exit 1
tc qdisc add dev eth0 root netem {down} || exit 1
tc -s qdisc show dev eth1
tc -s qdisc show dev eth0
{loops}echo {READY}
exec sleep infinity
"""


class UmlNetemBackend:
    """netem inside a user-mode-linux router, one UML per link."""

    name = "netem"
    where = "user-mode-linux router"

    def check(self, topology: TopologySpec) -> None:
        why_not = uml_why_not()
        if why_not is not None:
            raise UnavailableError(
                f"backend netem needs sch_netem; this kernel has none, and {why_not}; use "
                "--backend emu"
            )
        for link in topology.links:
            netem_params(link.uplink)  # refuses traces and byte limits, saying what works
            netem_params(link.downlink)

    def install(self, plan: DirectionPlan, ledger: Any) -> dict[str, Any]:
        raise NotImplementedError("the UML backend builds whole links (build_link)")

    def build_link(
        self, net: Any, i: int, link: LinkDef, hosts: dict[str, Any], say: Callable[[str], None]
    ) -> dict[str, Any]:
        from pyroute2 import NetNS
        from pyroute2.netlink.exceptions import NetlinkError

        run, ledger, log_dir = net.run, net.ledger, Path(net.log_dir)
        router = names.netns_name(run, link.name)
        netns.create(ledger, router)
        taps = [names.ifname(run, i, "a"), names.ifname(run, i, "b")]
        script = log_dir / f"uml-{link.name}.sh"
        script.write_text(init_script(link, i))
        script.chmod(0o755)
        console = log_dir / f"uml-{link.name}.console"
        uml_dir = log_dir / "uml"
        uml_dir.mkdir(exist_ok=True)
        cmd = [
            UML, "mem=128M", "rootfstype=hostfs", "rootflags=/", "ro", f"init={script}",
            "con=null", "con0=null,fd:1", f"eth0=tuntap,{taps[0]}", f"eth1=tuntap,{taps[1]}",
            f"uml_dir={uml_dir}", f"umid={run}-{link.name}",
        ]  # fmt: skip
        with open(console, "wb") as out:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                preexec_fn=lambda: enter_netns(router), start_new_session=True,
            )  # fmt: skip
        ledger.record("process", pid=proc.pid, start_ticks=process_start_ticks(proc.pid),
                      session=True, what=f"user-mode-linux router {link.name}", link=True)  # fmt: skip
        deadline = time.monotonic() + BOOT_TIMEOUT_S
        while READY not in console.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = console.read_text(errors="replace").strip().splitlines()[-4:]
                raise KernelError(f"the user-mode-linux router of {link.name} did not come up: "
                                  + " | ".join(tail))  # fmt: skip
            time.sleep(0.05)
        ready_ns = time.monotonic_ns()
        starts = _schedule_starts(console, link, proc, deadline)
        net_a, net_b = names.link_subnets(i)
        try:
            for host, tap, net_here, far in (
                (link.between[0], taps[0], net_a, net_b),
                (link.between[1], taps[1], net_b, net_a),
            ):
                host_ns = names.netns_name(run, host)
                with NetNS(router) as r:
                    r.link("set", index=r.link_lookup(ifname=tap)[0], net_ns_fd=host_ns)
                addr = f"{net_here}.{names.HOST_OCTET}"
                net.configure_host_interface(
                    host_ns, tap, addr, f"{net_here}.{names.ROUTER_OCTET}", far
                )
                hosts.setdefault(host, net.host_info(host, host_ns, addr))
        except (NetlinkError, IndexError) as e:
            raise KernelError(f"attaching the user-mode-linux router of {link.name}: {e}") from e
        info: dict[str, Any] = {"index": i, "router_netns": router, "between": list(link.between)}
        dev_of = {"uplink": "eth1", "downlink": "eth0"}
        for direction, spec in (("uplink", link.uplink), ("downlink", link.downlink)):
            info[direction] = {
                "spec": spec.to_dict(), "backend": "netem", "where": self.where, "pid": proc.pid,
                "tc": netem_params(spec).tc_args(), "console": str(console),
                "start_mono_ns": starts.get(dev_of[direction], ready_ns),
            }  # fmt: skip
            say(f"link {link.name} {direction}: netem {' '.join(info[direction]['tc'])} (in UML)")
        return info


def _schedule_starts(console: Path, link: LinkDef, proc: Any, deadline: float) -> dict[str, int]:
    """CLOCK_MONOTONIC ns when each scheduled egress's scheduler started (its first segment):
    the guest prints CLOCK_REALTIME (UML keeps the host's), converted here."""
    want = {dev for dev, spec in (("eth1", link.uplink), ("eth0", link.downlink)) if spec.schedule}
    found: dict[str, int] = {}
    while want - set(found):
        for line in console.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == "TB-SCHED-START":
                found[parts[1]] = int(parts[2]) - (time.time_ns() - time.monotonic_ns())
        if want - set(found):
            if proc.poll() is not None or time.monotonic() > deadline + 30:
                raise KernelError(f"the schedule of {link.name} did not start in its UML router")
            time.sleep(0.05)
    return found
