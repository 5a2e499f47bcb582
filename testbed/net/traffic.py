"""Cross traffic on a running Network: iperf3 servers and clients in the testbed's hosts, timed
from the stream's start, their receiver-side JSON kept in the cell (cross-<name>.json).

An on/off UDP flow is a sequence of iperf3 runs of on_ms worth of bytes at the rate, off_ms
apart, against one persistent server. Processes are started with Network.popen (recorded in the
ledger, ended by pid).
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.config.traffic import FlowSpec
from testbed.errors import TestbedError
from testbed.net.network import Network

BASE_PORT = 5301
UDP_PAYLOAD = 1200


@dataclass
class _Running:
    flow: FlowSpec
    server: subprocess.Popen[Any] | None  # none for a malformed flow
    client: subprocess.Popen[Any]
    out: Path


def client_script(flow: FlowSpec, address: str, port: int, session_s: float) -> str:
    """The shell line the sender host runs: wait for start_s, then the flow's iperf3 run(s)."""
    stop = min(flow.stop_s if flow.stop_s is not None else session_s, session_s)
    duration = max(0.0, stop - flow.start_s)
    base = f"iperf3 -c {address} -p {port} --connect-timeout 3000"
    if flow.kind == "tcp":
        run = f"{base} -C {flow.cc} -t {max(1, round(duration))} >/dev/null"
    elif flow.kind == "tcp_short":
        run = _downloads(flow, f"{base} -C {flow.cc}", duration)
    elif flow.on_ms is None:
        assert flow.rate_mbps is not None
        nbytes = max(UDP_PAYLOAD, round(flow.rate_mbps * 1e6 / 8 * duration))
        run = f"{base} -u -b {flow.rate_mbps}M -l {UDP_PAYLOAD} -n {nbytes} >/dev/null"
    else:
        assert flow.rate_mbps is not None and flow.off_ms is not None
        cycles = max(1, math.floor(duration * 1000 / (flow.on_ms + flow.off_ms)))
        nbytes = max(UDP_PAYLOAD, round(flow.rate_mbps * 1e6 / 8 * flow.on_ms / 1000))
        burst = f"{base} -u -b {flow.rate_mbps}M -l {UDP_PAYLOAD} -n {nbytes} >/dev/null"
        run = f"for i in $(seq {cycles}); do {burst}; sleep {flow.off_ms / 1000:.3f}; done"
    return f"sleep {flow.start_s:.3f}; {run}"


def download_plan(flow: FlowSpec, duration_s: float) -> list[tuple[float, int]]:
    """A tcp_short flow's (idle seconds before it, bytes) per download, drawn from a generator
    seeded by the flow's name (the same plan in every cell); idle times add up to at most
    duration_s (the downloads' own time comes on top: the script stops at stop_s)."""
    assert flow.size_kb is not None and flow.idle_mean_s is not None
    rng = random.Random(zlib.crc32(flow.name.encode()))
    plan, t = [], 0.0
    idle = 0.0 if flow.start_on else rng.expovariate(1 / flow.idle_mean_s)
    while t + idle < duration_s:
        t += idle
        plan.append((idle, round(rng.uniform(*flow.size_kb) * 1000)))
        idle = rng.expovariate(1 / flow.idle_mean_s)
    return plan


def _downloads(flow: FlowSpec, client: str, duration_s: float) -> str:
    """The shell of a tcp_short flow: each download after its idle time, none after stop_s."""
    steps = [f"end=$(( $(date +%s) + {math.ceil(duration_s)} ))"]
    for idle, nbytes in download_plan(flow, duration_s):
        steps.append(f"sleep {idle:.3f}; [ $(date +%s) -lt $end ] || exit 0; "
                     f"{client} -n {nbytes} >/dev/null")  # fmt: skip
    return "; ".join(steps)


class CrossTraffic:
    def __init__(self, net: Network, flows: tuple[FlowSpec, ...], out: Path) -> None:
        self.net, self.flows, self.out = net, flows, out
        self.running: list[_Running] = []
        self.started_ns: int | None = None

    def start(self, session_s: float, media_ports: dict[str, int] | None = None) -> None:
        """Servers now (ready before this returns), clients timed from now (the stream's start).
        media_ports: host -> the stream's media port there (what malformed flows aim at)."""
        for i, flow in enumerate(self.flows):
            if flow.kind == "malformed":
                self.running.append(self._hostile(i, flow, session_s, media_ports or {}))
                continue
            port = BASE_PORT + i
            out = self.out / f"cross-{flow.name}.json"
            one_shot = ["-1"] if flow.on_ms is None and flow.kind != "tcp_short" else []
            with open(out, "w") as f:
                server = self.net.popen(flow.dst, ["iperf3", "-s", *one_shot, "-J", "-i", "0.5",
                                                   "-p", str(port)], stdout=f, stderr=subprocess.DEVNULL)  # fmt: skip
            self._wait_listening(flow.dst, port)
            self.running.append(_Running(flow, server, None, out))  # type: ignore[arg-type]
        self.started_ns = time.monotonic_ns()
        for i, r in enumerate(self.running):
            if r.flow.kind == "malformed":
                continue
            script = client_script(r.flow, self.net.address(r.flow.dst), BASE_PORT + i, session_s)
            r.client = self.net.popen(r.flow.src, ["sh", "-c", script], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)  # fmt: skip

    def _hostile(self, i: int, flow: FlowSpec, session_s: float, ports: dict[str, int]) -> _Running:
        port = ports.get(flow.dst)
        if port is None:
            raise TestbedError(f"cross traffic {flow.name}: malformed datagrams aim at the "
                               f"stream's media port on {flow.dst}, and it has none (or it is "
                               "unknown: no single host candidate in its SDP)")  # fmt: skip
        stop = min(flow.stop_s if flow.stop_s is not None else session_s, session_s)
        out = self.out / f"cross-{flow.name}.json"
        assert flow.rate_pps is not None
        cmd = [sys.executable, "-m", "testbed.net.hostile", "--dst", self.net.address(flow.dst),
               "--port", str(port), "--pps", str(flow.rate_pps), "--start", str(flow.start_s),
               "--duration", str(max(0.0, stop - flow.start_s)), "--seed", str(i), "--out", str(out)]  # fmt: skip
        proc = self.net.popen(flow.src, cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return _Running(flow, None, proc, out)

    def _wait_listening(self, host: str, port: int) -> None:
        for _ in range(200):
            probe = self.net.run_in(host, ["sh", "-c", f"ss -Hltn 'sport = :{port}' | grep -q ."],
                                    check=False)  # fmt: skip
            if probe.returncode == 0:
                return
            time.sleep(0.02)
        raise TestbedError(f"cross traffic: iperf3 server on {host}:{port} did not start")

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Clients finish (or are ended), servers are ended; what each flow's receiver measured."""
        deadline = time.monotonic() + timeout_s
        for r in self.running:
            for proc in (r.client, r.server):
                if proc is None:
                    continue
                left = deadline - time.monotonic()
                try:
                    proc.wait(timeout=max(0.1, left) if proc is r.client else 2)
                except subprocess.TimeoutExpired:
                    proc.terminate()
                    try:
                        proc.wait(timeout=3)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
        return {r.flow.name: {**r.flow.to_dict(), "started_mono_ns": self.started_ns,
                              "file": r.out.name, **_hostile_stats(r)} for r in self.running}  # fmt: skip


def _hostile_stats(r: _Running) -> dict[str, Any]:
    """What a malformed flow sent, per kind (its own count; the cell's stray_datagrams says
    what reached the endpoint)."""
    if r.flow.kind != "malformed":
        return {}
    try:
        return {"sent": json.loads(r.out.read_text())["sent"]}
    except (OSError, ValueError, KeyError):
        return {"sent": None}


def server_intervals(path: Path) -> list[tuple[float, float, float]]:
    """(start_s, end_s, Mbps) per interval of every test an iperf3 server wrote (JSON objects,
    one per test, concatenated), in seconds since the first test began (a later test's start
    is known to the second only: iperf3 records whole seconds)."""
    text = path.read_text(errors="replace") if path.exists() else ""
    decoder = json.JSONDecoder()
    out: list[tuple[float, float, float]] = []
    i = 0
    first: float | None = None
    while True:
        while i < len(text) and text[i] not in "{":
            i += 1
        if i >= len(text):
            return out
        try:
            obj, i = decoder.raw_decode(text, i)
        except ValueError:
            return out
        start = float(obj.get("start", {}).get("timestamp", {}).get("timesecs", 0))
        first = start if first is None else first
        start -= first
        for iv in obj.get("intervals", []):
            s = iv.get("sum", {})
            out.append((start + float(s.get("start", 0)), start + float(s.get("end", 0)),
                        float(s.get("bits_per_second", 0)) / 1e6))  # fmt: skip
