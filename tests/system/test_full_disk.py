"""A full results disk (a small tmpfs mounted for the test): the sweep refuses a cell it has no
room for before building anything, and a disk that fills mid-cell fails the cell in words with
no partial cell; after space is freed, a rerun completes it."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from testbed.net.ledger import Ledger
from tests.conftest import ROOT
from tests.system.conftest import namespaces_of

EXPERIMENT = """name: disk
topology: {topology}
stream: {{source: synthetic, bitrate_mbps: 1, duration_s: 4, warmup_s: 0, drain_s: 0.5}}
grid: {{uplink.loss_pct: [0]}}
repetitions: 1
seed: 1
"""


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    where.mkdir(parents=True)
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tb-test-tmpfs", str(where)], check=True
    )
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=True)


def _run(tmp_path: Path, out: Path, run: str) -> subprocess.Popen[str]:
    exp = tmp_path / "disk.yaml"
    exp.write_text(EXPERIMENT.format(topology=ROOT / "topologies" / "p2p.yaml"))
    cmd = [sys.executable, "-m", "testbed.cli", "run", str(exp), "-o", str(out), "--name", run]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cells(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "cells").iterdir()) if (out / "cells").is_dir() else []


def test_no_room_for_a_cell_is_said_before_anything_is_built(run: str, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "3m") as disk:
        proc = _run(tmp_path, disk / "results", run)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 1, err
        assert "not enough space for the next cell" in err and "MB free" in err, err
        print(err)
        assert _cells(disk / "results") == []
        assert namespaces_of(f"{run[:4]}0") == []


def test_a_disk_that_fills_mid_cell_fails_it_in_words(run: str, tmp_path: Path) -> None:
    with tmpfs(tmp_path / "disk", "40m") as disk:
        out = disk / "results"
        proc = _run(tmp_path, out, run)
        cell_run = Ledger(f"{run[:4]}0")
        deadline = time.monotonic() + 40
        while (
            cell_run.phase() != "streaming" and time.monotonic() < deadline and proc.poll() is None
        ):
            time.sleep(0.05)
        assert cell_run.phase() == "streaming", "the cell did not start streaming"
        filler = disk / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=1M"], capture_output=True)
        said = "".join(proc.communicate(timeout=90))
        assert proc.returncode == 1, said
        assert "is full" in said and "free space and rerun" in said, said
        assert [c for c in _cells(out) if not c.startswith(".log-")] == [], _cells(out)
        assert namespaces_of(cell_run.run) == []
        filler.unlink()
        again = _run(tmp_path, out, run)
        _, err = again.communicate(timeout=90)
        assert again.returncode == 0, err
        assert len([c for c in _cells(out) if not c.startswith(".")]) == 1
