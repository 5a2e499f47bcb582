"""What running cells as Dask tasks costs, against the same cells run directly in the same run.

1. Overhead per cell: N identical cells, each `python -m testbed.experiment.cell` run directly
   one after another (the floor: what a cell costs with no executor), then the same N cells as
   a sweep through the embedded cluster and through a scheduler + one `testbed worker`
   (processes on this machine), over plain tcp:// and over mutual TLS (`testbed cluster
   certs`); overhead = (sweep wall time - direct wall time) / N.
2. Scaling: CPU-light cells through one worker, then two workers on the same scheduler.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from testbed.experiment.runner import _job
from testbed.experiment.spec import Experiment, load_experiment
from testbed.experiment.tls import make_certs

TOPOLOGY = Path(__file__).resolve().parents[2] / "topologies" / "p2p.yaml"
EXPERIMENT = """name: {name}
topology: {topology}
set: {{uplink.rate_mbps: 10, uplink.delay_ms: 10, downlink.delay_ms: 10}}
stream: {{source: synthetic, fps: 30, duration_s: {duration}, drain_s: 0.5, bitrate_mbps: {bitrate}}}
grid: {{stream.fps: [30]}}
repetitions: {cells}
seed: 1
"""

Say = Callable[[str], None]


@dataclass(frozen=True)
class SweepBench:
    cells: int
    direct_cells_s: tuple[float, ...]
    direct_s: float
    start_s: float  # `testbed run` of a finished sweep: process, preflight, cluster, nothing run
    embedded_s: float
    remote_s: float
    tls_s: float  # the same through a TLS scheduler and worker (testbed cluster certs)
    one_worker_s: float
    two_workers_s: float
    light_cells: int

    def lines(self) -> list[str]:
        n = self.cells
        return [
            f"{n} cells of the same experiment; run directly (the floor) a cell takes "
            f"{min(self.direct_cells_s):.2f}-{max(self.direct_cells_s):.2f} s",
            f"  direct, one after another    {self.direct_s:7.1f} s",
            f"  embedded cluster (1 worker)  {self.embedded_s:7.1f} s   overhead "
            f"{(self.embedded_s - self.direct_s) / n:+.2f} s a cell, of which the start "
            f"(`testbed run` with nothing to run: {self.start_s:.1f} s) "
            f"{self.start_s / n:.2f}",
            f"  scheduler + testbed worker   {self.remote_s:7.1f} s   overhead "
            f"{(self.remote_s - self.direct_s) / n:+.2f} s a cell (the cluster already up)",
            f"  the same over mutual TLS     {self.tls_s:7.1f} s   overhead "
            f"{(self.tls_s - self.direct_s) / n:+.2f} s a cell; TLS against tcp "
            f"{(self.tls_s - self.remote_s) / n:+.2f} s a cell",
            f"{self.light_cells} CPU-light cells (0.2 Mbps) on one host: one worker "
            f"{self.one_worker_s:.1f} s, two workers {self.two_workers_s:.1f} s, ratio "
            f"{self.two_workers_s / self.one_worker_s:.2f} (1.00 = no gain, 0.50 = perfect)",
        ]


def _experiment(folder: Path, name: str, cells: int, bitrate: float, duration: float) -> Path:
    p = folder / f"{name}.yaml"
    p.write_text(EXPERIMENT.format(name=name, topology=TOPOLOGY, cells=cells, bitrate=bitrate,
                                   duration=duration))  # fmt: skip
    return p


def _direct(exp: Experiment, folder: Path, run: str) -> list[float]:
    """Each cell's wall time, run as the cell process alone."""
    times = []
    for cell in exp.cells:
        job = _job(cell, exp, ("emu", "bench: direct"))
        t0 = time.monotonic()
        subprocess.run([sys.executable, "-m", "testbed.experiment.cell", "--job", job, "--out",
                        str(folder / cell.cell_id), "--name", f"{run[:4]}0"], check=True)  # fmt: skip
        times.append(time.monotonic() - t0)
    return times


def _sweep(
    exp_path: Path, out: Path, run: str, cluster: str | None, certs: Path | None = None
) -> float:
    args = ["--cluster", cluster] if cluster else ["--jobs", "1"]
    args += ["--certs", str(certs)] if certs else []
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "testbed.cli", "run", str(exp_path), "-o", str(out),
                    "--name", run, "--backend", "emu", *args], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    return time.monotonic() - t0


@contextmanager
def _cluster(folder: Path, workers: int, prefix: str, certs: Path | None = None) -> Iterator[str]:
    """A scheduler and `workers` testbed workers on this machine (over TLS with certs), stopped
    by pid after."""
    info = folder / f"scheduler-{workers}{'-tls' if certs else ''}.json"
    tls = ["--certs", str(certs)] if certs else ["--insecure"]
    procs = [subprocess.Popen([sys.executable, "-m", "testbed.cli", "scheduler", "--host",
                               "127.0.0.1", "--port", "0", "--scheduler-file", str(info), *tls],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not info.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.3)
        address = str(json.loads(info.read_text())["address"])
        for _ in range(workers):
            procs.append(subprocess.Popen(
                [sys.executable, "-m", "testbed.cli", "worker", address, "--name", prefix,
                 *(["--certs", str(certs)] if certs else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))  # fmt: skip
        time.sleep(6)  # preflight and registration: not part of any sweep's time
        yield address
    finally:
        for p in reversed(procs):
            p.send_signal(signal.SIGTERM)
        for p in reversed(procs):
            p.wait(timeout=30)


def bench_sweep(run: str, say: Say, cells: int = 4, light_cells: int = 6) -> SweepBench:
    with tempfile.TemporaryDirectory(prefix="rtc-bench-sweep-") as tmp:
        folder = Path(tmp)
        same = _experiment(folder, "same", cells, 2, 3)
        say(f"direct: {cells} cells (and a first sweep to warm the caches)")
        _sweep(same, folder / "warm", run, None)  # page cache, imports: not counted
        direct = _direct(load_experiment(same), folder / "direct", run)
        say("embedded cluster")
        embedded = _sweep(same, folder / "embedded", run, None)
        start = _sweep(same, folder / "embedded", run, None)  # all done: the fixed start
        with _cluster(folder, 1, f"{run[:3]}w") as address:
            say(f"scheduler + 1 worker at {address}")
            remote = _sweep(same, folder / "remote", run, address)
            light = _experiment(folder, "light", light_cells, 0.2, 3)
            say(f"{light_cells} light cells, one worker")
            one = _sweep(light, folder / "light1", run, address)
        certs = folder / "certs"
        make_certs(certs)
        with _cluster(folder, 1, f"{run[:3]}t", certs) as address:
            say(f"TLS scheduler + 1 worker at {address}")
            tls = _sweep(same, folder / "tls", run, address, certs)
        with _cluster(folder, 2, f"{run[:3]}w") as address:
            say(f"{light_cells} light cells, two workers")
            two = _sweep(light, folder / "light2", run, address)
    return SweepBench(cells, tuple(direct), sum(direct), start, embedded, remote, tls, one, two,
                      light_cells)  # fmt: skip


if __name__ == "__main__":
    result = bench_sweep(f"b{os.getpid() % 1000}", print)
    print("\n".join(result.lines()))
