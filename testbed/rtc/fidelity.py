"""Was this cell measured undisturbed? Its fidelity record, and the thresholds that flag it.

A cell's numbers are only as good as the machine that made them: an emulator that released
packets late, a capture that dropped packets, a host whose CPUs were stolen or oversubscribed
(a second cell on the same cores) all move latency without the network having done anything.
The record (cell.json `fidelity`):

  emulator   per link direction: release lateness p99 (us, the emulator's own statistic) and the
             releases more than 1 ms late (from its link log: actual_ns - sched_ns)
  host       over the cell: CPU steal (% of all CPU time), run queue (procs_running, mean and
             max, sampled every 0.5 s from /proc/stat), the CPUs
  captures   packets each tcpdump says the kernel dropped
  endpoints  each endpoint's CPU seconds (its own record)
  sender     frames the sender skipped (status not_sent)

THRESHOLDS flag a cell (`flags`: a list of reasons in words); the runner reruns a flagged cell
once (testbed.experiment.runner) and `testbed report` lists flagged cells.
"""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

import pandas as pd

LATE_NS = 1_000_000
THRESHOLDS = {
    "lateness_p99_us": 1000.0,  # an emulator's p99 release lateness
    "late_share": 0.005,  # its releases more than 1 ms late, as a share of what it released
    "late_min": 10,  # ... and at least this many (an RTCP-only direction releases a few hundred)
    "steal_pct": 5.0,  # CPU time the hypervisor took
    "runqueue_per_cpu": 1.5,  # mean runnable processes per CPU
    "capture_drops": 0,  # packets a capture lost
}


def _cpu_line() -> tuple[int, int]:
    """(steal ticks, all ticks) of /proc/stat's cpu line."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (fields[7] if len(fields) > 7 else 0), sum(fields)


def _running() -> int:
    with open("/proc/stat") as f:
        for line in f:
            if line.startswith("procs_running"):
                return int(line.split()[1])
    return 0


class HostSampler:
    """Steal and run queue of the host while a cell streams (a daemon thread, 0.5 s)."""

    def __init__(self, period_s: float = 0.5) -> None:
        self.period_s = period_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tb-host-sampler", daemon=True)
        self._start = (0, 0)  # (steal, all) ticks, read by start()

    def start(self) -> HostSampler:
        self._start = _cpu_line()
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.samples.append(max(0, _running() - 1))  # the sampler itself is running

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        steal, total = _cpu_line()
        d_total = max(1, total - self._start[1])
        runq = self.samples or [0]
        return {"cpus": os.cpu_count() or 1, "steal_pct": 100 * (steal - self._start[0]) / d_total,
                "runqueue_mean": sum(runq) / len(runq), "runqueue_max": max(runq),
                "affinity": sorted(os.sched_getaffinity(0))}  # fmt: skip


def emulator_record(cell: Path) -> dict[str, dict[str, Any]]:
    """Per link direction of the cell (link-<name>-<dir>.stats.json and .log): lateness p99 and
    releases more than 1 ms late."""
    from testbed.shaping.linklog import read_link_log

    out: dict[str, dict[str, Any]] = {}
    for stats_path in sorted(cell.glob("link-*.stats.json")):
        stats = json.loads(stats_path.read_text())
        name = stats_path.name.removeprefix("link-").removesuffix(".stats.json")
        log_path = cell / f"link-{name}.log"
        late = released = 0
        if log_path.exists():
            log = read_link_log(log_path)
            done = (
                log.dropna(subset=["actual_ns", "sched_ns"]) if "actual_ns" in log else log.iloc[:0]
            )
            released = len(done)
            late = int(((done.actual_ns - done.sched_ns) > LATE_NS).sum())
        out[name] = {"lateness_p99_us": (stats.get("lateness_us") or {}).get("p99"),
                     "late_over_1ms": late, "released": released}  # fmt: skip
    return out


def capture_drops(said: str) -> int:
    """Packets a tcpdump's closing statistics say the kernel dropped."""
    m = re.search(r"(\d+) packets? dropped by kernel", said)
    return int(m.group(1)) if m else 0


def flags(record: dict[str, Any]) -> list[str]:
    """Why the record says the cell may have been disturbed (empty: it was not)."""
    t, out = THRESHOLDS, []
    for name, e in record.get("emulator", {}).items():
        p99 = e.get("lateness_p99_us")
        if p99 is not None and p99 > t["lateness_p99_us"]:
            out.append(
                f"emulator {name}: release lateness p99 {p99:.0f} us > {t['lateness_p99_us']:g}"
            )
        late, released = e.get("late_over_1ms", 0), e.get("released", 0)
        if released and late >= t["late_min"] and late / released > t["late_share"]:
            out.append(f"emulator {name}: {late} of {released} releases more "
                       f"than 1 ms late (> {t['late_share']:.1%})")  # fmt: skip
    host = record.get("host") or {}
    if host.get("steal_pct", 0) > t["steal_pct"]:
        out.append(f"host: CPU steal {host['steal_pct']:.1f}% > {t['steal_pct']:g}%")
    if host.get("runqueue_mean", 0) > t["runqueue_per_cpu"] * host.get("cpus", 1):
        out.append(f"host: run queue {host['runqueue_mean']:.1f} on {host['cpus']} CPUs "
                   f"(> {t['runqueue_per_cpu']:g} a CPU)")  # fmt: skip
    for role, n in (record.get("captures") or {}).items():
        if n > t["capture_drops"]:
            out.append(f"capture {role}: the kernel dropped {n} packets")
    return out


def fidelity_record(cell: Path, frames: pd.DataFrame, captures: dict[str, str],
                    endpoints_cpu: dict[str, Any], host: dict[str, Any]) -> dict[str, Any]:  # fmt: skip
    """The cell's record, with its flags."""
    record: dict[str, Any] = {
        "emulator": emulator_record(cell), "host": host,
        "captures": {role: capture_drops(said) for role, said in captures.items()},
        "endpoints_cpu_s": {r: (c or {}).get("cpu_s") for r, c in endpoints_cpu.items()},
        "sender_skipped_frames": int((frames.status == "not_sent").sum()) if len(frames) else 0,
    }  # fmt: skip
    record["flags"] = flags(record)
    return record
