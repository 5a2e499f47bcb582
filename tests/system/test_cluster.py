"""Sweeps on a real Dask cluster on this machine (loopback): a scheduler process and
`testbed worker` processes, cells killed with their worker, inputs edited between runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.system.conftest import Start, run_cli, stop_processes
from tests.system.test_sweep import cells, experiment

DASK = Path(sys.executable).with_name("dask")


@pytest.fixture
def scheduler(tmp_path: Path) -> Iterator[str]:
    """A real `dask scheduler` on loopback; a cell whose worker died twice more is failed."""
    info = tmp_path / "scheduler.json"
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "2"}
    proc = subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", "0",
                             "--no-dashboard", "--scheduler-file", str(info)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)  # fmt: skip
    deadline = time.monotonic() + 30
    while not info.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert info.exists(), "the scheduler did not start"
    time.sleep(0.3)
    yield str(json.loads(info.read_text())["address"])
    stop_processes([proc])


def _cells_of(pid: int) -> list[int]:
    """Cell processes a worker runs (its children running testbed.experiment.cell)."""
    out = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{name}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat[1]) == pid and b"testbed.experiment.cell" in cmd:
            out.append(int(name))
    return out


def _namespaces(prefix: str) -> list[str]:
    return [n for n in os.listdir("/run/netns") if n.startswith(prefix)] if os.path.isdir(
        "/run/netns") else []  # fmt: skip


def test_two_workers_one_killed_mid_cell_every_cell_once(
    run: str, tmp_path: Path, scheduler: str, workers: Start
) -> None:
    prefix = f"w{run[1:4]}"
    one = workers(scheduler, "--name", prefix)
    two = workers(scheduler, "--name", prefix)  # same host, same prefix: the slots keep them apart
    exp, out = experiment(tmp_path, "[1, 2, 4]"), tmp_path / "res"
    client = subprocess.Popen([sys.executable, "-m", "testbed.cli", "run", str(exp), "-o", str(out),
                               "--name", run, "--cluster", scheduler],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (_cells_of(one.pid) and _cells_of(two.pid)):
        time.sleep(0.2)
    assert _cells_of(two.pid), "the second worker never took a cell"
    time.sleep(1.0)  # mid-cell
    os.kill(two.pid, signal.SIGKILL)
    said, _ = client.communicate(timeout=300)
    assert client.returncode == 0, said[-2000:]
    done = cells(out)
    assert len(done) == 6 and len({c["cell_id"] for c in done}) == 6, said[-2000:]
    assert all(c["host"]["backend"] == "emu" and c["host"]["kernel"] for c in done)
    assert not list((out / "cells").glob(".tmp-*"))
    session = json.loads((out / "run.json").read_text())["sessions"][-1]
    assert session["cluster"] == scheduler and len(session["workers"]) == 2
    time.sleep(3)  # the killed worker's cell was told (PDEATHSIG) and unwinds itself
    assert _namespaces(prefix) == []
    assert one.poll() is None  # the surviving worker is still in the cluster
    assert run_cli("clean").returncode == 0
    assert not list(Path("/var/tmp/rtc-testbed").glob(f"work-{two.pid}"))


def test_client_killed_its_cells_on_the_workers_are_cancelled(
    run: str, tmp_path: Path, scheduler: str, workers: Start
) -> None:
    prefix = f"v{run[1:4]}"
    worker = workers(scheduler, "--name", prefix)
    exp, out = experiment(tmp_path, "[1, 2]"), tmp_path / "res"
    exp.write_text(exp.read_text().replace("duration_s: 2", "duration_s: 30"))
    client = subprocess.Popen([sys.executable, "-m", "testbed.cli", "run", str(exp), "-o", str(out),
                               "--name", run, "--cluster", scheduler],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not _cells_of(worker.pid):
        time.sleep(0.2)
    cell = _cells_of(worker.pid)
    assert cell, "the worker never took a cell"
    time.sleep(2)
    os.kill(client.pid, signal.SIGKILL)
    client.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (_cells_of(worker.pid) or _namespaces(prefix)):
        time.sleep(0.5)
    assert _cells_of(worker.pid) == [] and _namespaces(prefix) == [], "the cell kept running"
    assert worker.poll() is None
    assert cells(out) == []


def test_a_worker_that_fails_its_preflight_says_why_and_takes_no_cells(
    run: str, tmp_path: Path, scheduler: str, workers: Start
) -> None:
    # a new user namespace without a mapping: uid 65534 and no capabilities on the host, yet the
    # files of this checkout stay readable (a clone in a private folder, as CI makes, too)
    nobody = subprocess.run(
        ["unshare", "--user", sys.executable, "-m", "testbed.cli", "worker", scheduler],
        capture_output=True, text=True, timeout=60, env={**os.environ, "HOME": "/tmp"},
    )  # fmt: skip
    assert nobody.returncode == 2, nobody.stderr
    lines = nobody.stderr.strip().splitlines()
    assert len(lines) == 1 and "takes no cells: not root" in lines[0], nobody.stderr
    res = run_cli("run", str(experiment(tmp_path, "[1]")), "-o", str(tmp_path / "r"), "--name",
                  run, "--cluster", scheduler, timeout=60)  # fmt: skip
    assert res.returncode == 2 and "no worker has joined" in res.stderr, res.stderr
    assert not (tmp_path / "r").exists()


def test_bad_cluster_input_is_one_line_before_any_cell(
    run: str, tmp_path: Path, scheduler: str, workers: Start
) -> None:
    exp = experiment(tmp_path, "[1]")
    for args, said in (
        (["--cluster", "tcp://127.0.0.1:1"], "cannot reach the Dask scheduler at tcp://127.0.0.1:1"),
        (["--cluster", "not an address"], "--cluster: not an address: not a scheduler address"),
    ):  # fmt: skip
        res = run_cli("run", str(exp), "-o", str(tmp_path / "r"), "--name", run, *args, timeout=60)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert said in res.stderr, res.stderr
    # a worker that offers only another stack (user-mode-linux, the other backend, cannot boot
    # on every host kernel; Chromium is installed wherever the tests run)
    workers(scheduler, "--name", f"u{run[1:4]}", "--stacks", "chromium")
    res = run_cli("run", str(exp), "-o", str(tmp_path / "r"), "--name", run, "--backend", "emu",
                  "--cluster", scheduler, timeout=60)  # fmt: skip
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "no worker of the cluster" in res.stderr and "stack-aiortc" in res.stderr, res.stderr
    assert not (tmp_path / "r").exists()
    bad = run_cli("worker", scheduler, "--backends", "tc")
    assert (
        bad.returncode == 2
        and "--backends: tc: unknown; valid: emu, netem, netem-uml" in bad.stderr
    )


def test_an_input_file_edited_between_runs_is_refused(run: str, tmp_path: Path) -> None:
    trace = tmp_path / "up.trace"
    trace.write_text("\n".join(str(t) for t in range(1, 3000, 1)) + "\n")  # ~12 Mbps
    exp = tmp_path / "trace.yaml"
    exp.write_text(f"""name: traced
topology: {ROOT / "topologies" / "p2p.yaml"}
set: {{uplink.rate_mbps: null, uplink.trace: up.trace, uplink.delay_ms: 10, downlink.delay_ms: 10}}
stream: {{source: synthetic, fps: 30, duration_s: 1, drain_s: 0.5, bitrate_mbps: 1}}
""")
    out = tmp_path / "res"
    first = run_cli("run", str(exp), "-o", str(out), "--name", run, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    assert len(cells(out)) == 1
    meta = json.loads((out / "run.json").read_text())
    assert list(meta["inputs"]) == [str(trace)]
    trace.write_text(trace.read_text() + "3000\n")
    again = run_cli("run", str(exp), "-o", str(out), "--name", run, timeout=60)
    assert again.returncode == 2, again.stderr
    assert f"input file {trace} changed" in again.stderr and "refusing to mix" in again.stderr


def test_precision_adds_repetitions_only_where_the_interval_is_wide(
    run: str, tmp_path: Path
) -> None:
    exp, out = tmp_path / "precise.yaml", tmp_path / "res"
    exp.write_text(f"""name: precise
topology: {ROOT / "topologies" / "p2p.yaml"}
set: {{uplink.rate_mbps: 10, uplink.delay_ms: 10, downlink.delay_ms: 10}}
stream: {{source: synthetic, fps: 30, duration_s: 2, drain_s: 0.5, bitrate_mbps: 2}}
grid: {{uplink.loss_pct: [0, 10]}}
repetitions: 2
repetitions_max: 4
precision: {{metric: p95, ci_ms: 3}}
""")
    res = run_cli("run", str(exp), "-o", str(out), "--name", run, timeout=400)
    assert res.returncode == 0, res.stderr[-2000:]
    outcome = {o["params"]["uplink.loss_pct"]: o
               for o in json.loads((out / "run.json").read_text())["sessions"][-1]["precision"]}  # fmt: skip
    assert outcome[0]["repetitions"] == 2 and outcome[0]["met"], outcome  # lossless: stops early
    for o in outcome.values():  # the rule: met, or as many as allowed
        assert o["met"] == (o["hi_ms"] - o["lo_ms"] <= 3) and (o["met"] or o["repetitions"] == 4)
    assert len(cells(out)) == sum(o["repetitions"] for o in outcome.values())
    again = run_cli("run", str(exp), "-o", str(out), "--name", run, timeout=120)
    assert again.returncode == 0 and "0 to run" in again.stdout, again.stdout + again.stderr
