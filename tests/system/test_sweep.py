"""Sweeps for real: cells run in their own topologies, atomically, resumably; then analysis."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import ROOT
from tests.system.conftest import namespaces_of, run_cli

EXP = """name: tiny
topology: {topo}
set: {{uplink.rate_mbps: 10, uplink.delay_ms: 10, downlink.delay_ms: 10}}
stream: {{source: synthetic, fps: 30, duration_s: 2, warmup_s: 0.5, drain_s: 0.5}}
grid:
  stream.bitrate_mbps: {bitrates}
  uplink.loss_pct: [0, 5]
repetitions: 1
seed: 1
"""


def experiment(tmp_path: Path, bitrates: str = "[1, 4]") -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(EXP.format(topo=ROOT / "topologies" / "p2p.yaml", bitrates=bitrates))
    return p


def cells(out: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads((c / "cell.json").read_text()) for c in sorted((out / "cells").iterdir())
            if not c.name.startswith(".")]  # fmt: skip


def test_run_report_plot_and_rerun_skips(run: str, tmp_path: Path) -> None:
    exp, out = experiment(tmp_path), tmp_path / "res"
    res = run_cli("run", str(exp), "-o", str(out), "--name", run, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    done = cells(out)
    assert len(done) == 4
    assert {(c["params"]["stream.bitrate_mbps"], c["params"]["uplink.loss_pct"]) for c in done} == {
        (1, 0), (1, 5), (4, 0), (4, 5)}  # fmt: skip
    meta = json.loads((out / "run.json").read_text())
    assert meta["experiment"] == "tiny" and meta["versions"]["aiortc"] == "1.16.0" and meta["ended"]
    again = run_cli("run", str(exp), "-o", str(out), "--name", run, timeout=60)
    assert again.returncode == 0 and "4 already done, 0 to run" in again.stdout
    report = run_cli("report", str(out))
    assert report.returncode == 0 and "latency_p95_ms" in report.stdout
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    plot = run_cli("plot", str(out), "-o", str(tmp_path / "fig.pdf"))
    assert plot.returncode == 0, plot.stderr
    assert (tmp_path / "fig.pdf").stat().st_size > 1000 and (tmp_path / "fig.png").exists()
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file() and p.name != ".lock"}
    assert before == after, "analysis must not touch raw results"
    other = experiment(tmp_path, "[2]")
    other.write_text(other.read_text().replace("name: tiny", "name: tiny2"))
    mixed = run_cli("run", str(other), "-o", str(out), "--name", run)
    assert mixed.returncode == 2 and "the experiment file differs" in mixed.stderr


def test_kill_9_mid_sweep_then_clean_and_rerun_finishes_each_cell_once(
    run: str, tmp_path: Path
) -> None:
    exp, out = experiment(tmp_path, "[1, 2, 4]"), tmp_path / "res"
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "run", str(exp), "-o", str(out),
                             "--name", run], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(cells(out) if (out / "cells").exists() else []) < 1:
        time.sleep(0.2)
    time.sleep(1.0)  # the second cell is under way
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    time.sleep(3)  # the orphaned cell is told (PDEATHSIG) and unwinds
    assert run_cli("clean").returncode == 0
    assert (
        not [n for n in os.listdir("/run/netns") if n.startswith(run[:4])]
        if os.path.isdir("/run/netns")
        else True
    )
    res = run_cli("run", str(exp), "-o", str(out), "--name", run, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    done = cells(out)
    ids = [c["cell_id"] for c in done]
    assert len(done) == 6 and len(set(ids)) == 6
    assert not list((out / "cells").glob(".tmp-*"))
    assert namespaces_of(run) == []


def test_bad_experiment_input(run: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"topology: {ROOT / 'topologies' / 'p2p.yaml'}\ngrid: {{stream.fps: []}}\n")
    res = run_cli("run", str(bad), "-o", str(tmp_path / "r"), "--name", run)
    assert res.returncode == 2 and "grid.stream.fps: expected a non-empty list" in res.stderr
    assert not (tmp_path / "r").exists()


VARIANTS = """name: variants
topology: {topo}
set: {{uplink.rate_mbps: 10, uplink.delay_ms: 10, downlink.delay_ms: 10, uplink.loss_pct: 5}}
stream: {{source: synthetic, fps: 30, duration_s: 2, drain_s: 0.5, bitrate_mbps: 2}}
grid:
  stream.fec: [{{scheme: none}}, {{scheme: rs, overhead: 0.5}}]
repetitions: 1
seed: 1
"""


def test_variant_sweep_report_and_plots(run: str, tmp_path: Path) -> None:
    exp, out = tmp_path / "variants.yaml", tmp_path / "res"
    exp.write_text(VARIANTS.format(topo=ROOT / "topologies" / "p2p.yaml"))
    res = run_cli("run", str(exp), "-o", str(out), "--name", run, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    report = run_cli("report", str(out), "--by", "fec")
    assert report.returncode == 0, report.stderr
    rows = {
        line.split()[0]: line
        for line in report.stdout.splitlines()
        if line.startswith(("none", "rs"))
    }
    assert set(rows) == {"none", "rs"}
    # FEC spends bytes: its overhead is far above NACK's at 5% loss
    overhead = {k: float(v.split("(")[1].split("%")[0]) for k, v in rows.items()}
    assert overhead["rs"] > 40 > overhead["none"]
    for args, name in ((["--by", "fec"], "by.pdf"), (["--timeseries"], "ts.pdf")):
        plot = run_cli("plot", str(out), *args, "-o", str(tmp_path / name))
        assert plot.returncode == 0, plot.stderr
        assert (tmp_path / name).stat().st_size > 1000
    assert all(
        (c / "timeseries.csv").exists()
        for c in (out / "cells").iterdir()
        if not c.name.startswith(".")
    )
