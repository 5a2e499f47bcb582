"""A cell whose emulator was made late on purpose is flagged by its fidelity record and rerun
once; a quiet cell carries a record that flags nothing. Real emulators, a real CPU hog."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT
from tests.system.conftest import namespaces_of, run_cli

EXP = """name: hogged
topology: {topo}
set: {{uplink.rate_mbps: 10, uplink.delay_ms: 10, downlink.delay_ms: 10}}
stream: {{source: synthetic, fps: 30, bitrate_mbps: 4, duration_s: 4, drain_s: 0.5}}
repetitions: 1
seed: 1
"""

# Real-time priority above the emulators' (SCHED_FIFO 50), one per CPU, all busy in the same
# 4 ms of every 10 ms (on the clock, so no CPU is left free to run the emulator on): a release
# due in a busy spell waits up to 4 ms (RT throttling and the 60% idle keep the host usable)
HOG = """
import os, time
os.sched_setaffinity(0, {cpu})
os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(60))
while True:
    phase = time.monotonic() % 0.010
    if phase < 0.004:
        while time.monotonic() % 0.010 < 0.004:
            pass
    else:
        time.sleep(0.010 - phase)
"""


def test_a_hogged_cell_is_flagged_and_rerun_once(run: str, tmp_path: Path) -> None:
    exp = tmp_path / "hogged.yaml"
    exp.write_text(EXP.format(topo=ROOT / "topologies" / "p2p.yaml"))
    out = tmp_path / "res"
    hogs = [subprocess.Popen([sys.executable, "-c", HOG.format(cpu={c})])
            for c in sorted(os.sched_getaffinity(0))]  # fmt: skip
    try:
        res = run_cli("run", str(exp), "-o", str(out), "--name", run, timeout=300)
    finally:
        for h in hogs:
            h.kill()
            h.wait()
    assert res.returncode == 0, res.stderr[-2000:]
    session = json.loads((out / "run.json").read_text())["sessions"][-1]
    (rerun,) = session["reruns"]
    assert any(w.startswith("emulator ") for w in rerun["why"]), rerun
    assert (out / "flagged" / rerun["cell"] / "cell.json").exists()  # the first run, aside
    cell = json.loads((out / "cells" / rerun["cell"] / "cell.json").read_text())
    assert cell["fidelity"]["flags"], "the rerun ran under the same hog: still flagged, and kept"
    report = run_cli("report", str(out))
    assert report.returncode == 0 and f"cell {rerun['cell']} flagged" in report.stdout
    assert namespaces_of(run) == []


def test_a_quiet_cell_has_a_record_that_flags_nothing(run: str, tmp_path: Path) -> None:
    exp = tmp_path / "quiet.yaml"
    exp.write_text(EXP.format(topo=ROOT / "topologies" / "p2p.yaml").replace("hogged", "quiet"))
    out = tmp_path / "res"
    res = run_cli("run", str(exp), "-o", str(out), "--name", run, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (cell,) = [json.loads(p.read_text()) for p in (out / "cells").glob("*/cell.json")]
    record = cell["fidelity"]
    assert record["flags"] == [], record
    assert set(record["emulator"]) == {"path-uplink", "path-downlink"}
    assert record["emulator"]["path-uplink"]["released"] > 1000
    assert record["captures"] == {"sender": 0, "receiver": 0} and record["host"]["cpus"] >= 1
    assert "reruns" not in json.loads((out / "run.json").read_text())["sessions"][-1]


def test_two_cells_at_once_run_on_their_own_cores(run: str, tmp_path: Path) -> None:
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        import pytest

        pytest.skip("one core: nothing to divide")
    exp = tmp_path / "two.yaml"
    exp.write_text(EXP.format(topo=ROOT / "topologies" / "p2p.yaml").replace("hogged", "two")
                   + "grid: {uplink.loss_pct: [0, 1]}\n")  # fmt: skip
    out = tmp_path / "res"
    res = run_cli("run", str(exp), "-o", str(out), "--jobs", "2", "--name", run, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((out / "run.json").read_text())["sessions"][-1]["pinned"] == 2
    runs = [json.loads(p.read_text()) for p in sorted(out.glob("*/*/cell.json"))]  # cells, flagged
    spans = [(set(r["fidelity"]["host"]["affinity"]), r["started_real_ns"], r["ended_real_ns"])
             for r in runs]  # fmt: skip
    assert all(len(a) == len(cores) // 2 for a, _, _ in spans), spans
    overlapping = [(a, b) for i, a in enumerate(spans) for b in spans[i + 1 :]
                   if a[1] < b[2] and b[1] < a[2]]  # fmt: skip
    assert all(not (a[0] & b[0]) for a, b in overlapping), spans  # at once: their own cores
