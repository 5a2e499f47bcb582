"""Network namespaces: created through the ledger, entered to run commands."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

from testbed.errors import KernelError
from testbed.net.ledger import Ledger, deferred_signals
from testbed.net.nsenter import NETNS_DIR, enter_netns, netns_sysctl


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def create(ledger: Ledger, name: str, router: bool = False) -> None:
    """Create namespace NAME (recorded first), loopback up, IPv6 off (keeps links quiet).

    A router forwards IPv4 and does no reverse-path filtering (the emulator re-injects packets
    through a TUN whose reverse path is elsewhere). All sysctls are the namespace's own.
    """
    from pyroute2 import netns

    if exists(name):
        raise KernelError(
            f"network namespace {name!r} already exists; if a testbed run crashed, "
            "run `testbed clean`; otherwise choose another --name"
        )
    ledger.record("netns", name=name)
    with deferred_signals():
        netns.create(name)
    prepare(name)
    if router:
        netns_sysctl(name, "net.ipv4.ip_forward", "1")
        for key in ("net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"):
            netns_sysctl(name, key, "0")


def prepare(name: str) -> None:
    """Loopback up, IPv6 off (keeps links quiet): every host's namespace, made here or a
    container's bound to NAME."""
    from pyroute2 import NetNS

    with NetNS(name) as ns:
        ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
    for key in ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6"):
        netns_sysctl(name, key, "1")


def popen(
    name: str, cmd: Sequence[str], env: Mapping[str, str] | None = None, **kw: Any
) -> subprocess.Popen[Any]:
    """Start CMD inside namespace NAME (a child process; the caller owns and ends it)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.Popen(list(cmd), env=full_env, preexec_fn=lambda: enter_netns(name), **kw)


def run(
    name: str,
    cmd: Sequence[str],
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run CMD inside namespace NAME to completion, capturing its output as text."""
    proc = popen(name, cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise
    result = subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise KernelError(
            f"`{' '.join(cmd)}` in {name} exited {proc.returncode}: {err.strip()[-300:]}"
        )
    return result
