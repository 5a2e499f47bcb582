"""Containment: a session's traffic stays between the testbed's namespaces. Every process it
starts (endpoints, browsers and their helpers) lives in a testbed namespace, so none of their
sockets is on the host; the host's own interfaces carry nothing of it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.net.ledger import Ledger, owned_processes
from testbed.rtc.chromium.browser import missing
from tests.conftest import ROOT

P2P = str(ROOT / "topologies" / "p2p.yaml")


def _host_bytes() -> int:
    """Bytes through the host's own interfaces (loopback aside), from the root namespace."""
    total = 0
    for line in Path("/proc/1/net/dev").read_text().splitlines()[2:]:
        name, data = line.split(":", 1)
        if name.strip() != "lo":
            fields = data.split()
            total += int(fields[0]) + int(fields[8])
    return total


def _netns(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


@pytest.mark.parametrize("stack", ["aiortc", "chromium"])
def test_a_session_stays_inside_its_namespaces(run: str, tmp_path: Path, stack: str) -> None:
    if stack == "chromium" and missing() is not None:
        pytest.skip(str(missing()))
    host_ns = _netns(1)
    before = _host_bytes()
    cmd = [sys.executable, "-m", "testbed.cli", "stream", P2P, "--stack", stack,
           "--bitrate-mbps", "4", "--duration-s", "6", "-o", str(tmp_path / "o"), "--name", run]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ledger = Ledger(run)
    seen: set[int] = set()
    deadline = time.monotonic() + 40
    while proc.poll() is None and time.monotonic() < deadline:
        entries = ledger.entries() if ledger.path.exists() else []
        for e in entries:
            if e.get("kind") != "process":
                continue
            pids = [int(e["pid"])] if e.get("pid") else []
            if e.get("owned_file"):
                pids += [p for p, _ in owned_processes(e["owned_file"])]
            for pid in pids:
                ns = _netns(pid)
                if ns is not None:
                    assert ns != host_ns, (
                        f"{e.get('what')} (pid {pid}) runs in the host's namespace"
                    )
                    seen.add(pid)
        time.sleep(0.2)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(seen) >= (2 if stack == "aiortc" else 8)  # endpoints (and the browsers' trees)
    sent = (tmp_path / "o" / "sender.pcap").stat().st_size  # ~3 MB of media went by
    assert _host_bytes() - before < sent / 10, "the host's interfaces carried the session"
