"""Faults during a sweep: a link process killed mid-cell fails the cell in words, leaves no
partial cell behind, and a rerun completes it exactly once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from testbed.net.ledger import Ledger
from tests.conftest import ROOT
from tests.system.conftest import namespaces_of

EXPERIMENT = """name: faults
topology: {topology}
stream: {{source: synthetic, bitrate_mbps: 1, duration_s: 6, warmup_s: 0, drain_s: 0.5}}
grid: {{uplink.loss_pct: [0]}}
repetitions: 1
seed: 1
"""


def test_sigkill_of_the_uplink_emulator_mid_cell(run: str, tmp_path: Path) -> None:
    exp = tmp_path / "faults.yaml"
    exp.write_text(EXPERIMENT.format(topology=ROOT / "topologies" / "p2p.yaml"))
    out = tmp_path / "results"
    cmd = [sys.executable, "-m", "testbed.cli", "run", str(exp), "-o", str(out), "--name", run]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cell_run = Ledger(f"{run[:4]}0")  # the runner's name for its first slot
    deadline = time.monotonic() + 30
    victim = None
    while time.monotonic() < deadline and victim is None:
        for e in cell_run.entries():
            pidfile = Path(e.get("pidfile") or "/nonexistent")
            if (
                e.get("what") == "emulator path-uplink"
                and pidfile.exists()
                and cell_run.entries()[-1].get("what", "").endswith("in sender")
            ):
                victim = int(pidfile.read_text().split()[0])
        time.sleep(0.05)
    assert victim is not None, "the cell's session did not start"
    time.sleep(1.5)  # mid-stream
    os.kill(victim, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 1
    said = stdout + stderr
    assert f"emulator path-uplink (pid {victim}) was killed by signal 9 (SIGKILL)" in said, said
    assert not list((out / "cells").glob(".tmp-*")), "a partial cell was left in the results"
    assert not [p for p in (out / "cells").iterdir() if not p.name.startswith(".")]
    assert namespaces_of(cell_run.run) == []
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    cells = [p for p in (out / "cells").iterdir() if not p.name.startswith(".")]
    assert len(cells) == 1 and (cells[0] / "cell.json").exists()
