"""`testbed run`: every cell in its own fresh topology, atomically written, skipped when done.

results/NAME/run.json             metadata: experiment file (text and digest), git revision,
                                  versions, kernel, machine, backend, jobs, start/end
results/NAME/cells/ID/            one cell (frames.parquet, cell.json with `params`, pcaps, logs)

A cell is a subprocess with its own run name (its namespaces and emulators): `jobs` of them run
at once. A rerun skips cells whose folder exists; a cell folder appears only when complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from testbed.errors import ConfigError, TestbedError
from testbed.experiment.spec import Cell, Experiment
from testbed.files import disk_full, free_bytes, write_json_atomic
from testbed.net.ledger import Ledger
from testbed.procstat import exit_words
from testbed.versions import package_versions

Say = Callable[[str], None]
PR_SET_PDEATHSIG = 1


def default_jobs() -> int:
    """One cell per two cores: a cell keeps ~2 emulators, 2 endpoints and 2 captures busy."""
    return max(1, (os.cpu_count() or 2) // 2)


def _git_revision() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None


def prepare_results(exp: Experiment, out: Path, backend: str, jobs: int) -> dict[str, Any]:
    """Create or reopen the results folder; refuse one made by a different experiment file."""
    meta_path = out / "run.json"
    if meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        if meta.get("experiment_digest") != exp.digest:
            raise ConfigError(
                str(out), "run.json",
                f"these results come from a different experiment file ({meta.get('experiment_source')},"
                f" digest {meta.get('experiment_digest')}); refusing to mix: use another -o",
            )  # fmt: skip
        meta.setdefault("sessions", []).append({"started": time.time(), "jobs": jobs})
    else:
        (out / "cells").mkdir(parents=True, exist_ok=True)
        meta = {
            "experiment": exp.name, "experiment_source": exp.source,
            "experiment_digest": exp.digest, "experiment_text": exp.text,
            "topology": exp.topology_path, "grid": exp.grid, "repetitions": exp.repetitions,
            "cells": len(exp.cells), "git_revision": _git_revision(), "versions": package_versions(),
            "kernel": platform.release(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "backend": backend,
            "sessions": [{"started": time.time(), "jobs": jobs}],
        }  # fmt: skip
    write_json_atomic(meta_path, meta)
    return meta


def done_cells(out: Path) -> set[str]:
    cells = out / "cells"
    if not cells.is_dir():
        return set()
    return {
        p.name for p in cells.iterdir() if not p.name.startswith(".") and (p / "cell.json").exists()
    }


def _die_with_parent() -> None:
    """A cell whose runner is killed gets SIGTERM and unwinds its topology."""
    libc = ctypes.CDLL(None)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _job(cell: Cell, exp: Experiment, backend: tuple[str, str]) -> str:
    """A cell's job: its resolved specs as data (re-validated by the cell), never --set text."""
    return json.dumps({
        "cell_id": cell.cell_id, "params": cell.params, "topology_source": exp.topology_path,
        "topology": cell.topology.to_dict(), "stream": cell.stream.to_dict(), "seed": cell.seed,
        "backend": backend[0], "backend_reason": backend[1], "experiment": exp.name,
    })  # fmt: skip


@contextlib.contextmanager
def _results_lock(out: Path) -> Iterator[None]:
    """One `testbed run` writes a results folder at a time; the lock is closed after (a long-
    lived process that runs many sweeps leaked one file per sweep: the soak found it)."""
    lock = os.open(out / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TestbedError(f"another `testbed run` is writing {out}; wait for it") from None
        yield
    finally:
        os.close(lock)


def run_experiment(
    exp: Experiment,
    out: Path,
    jobs: int,
    run: str,
    backend: tuple[str, str],
    say: Say,
    progress: bool = True,
) -> dict[str, Any]:
    """backend: (name, why) as choose_backend resolved it, once for every cell."""

    from tqdm import tqdm

    out.mkdir(parents=True, exist_ok=True)
    with _results_lock(out):
        previous = prepare_results(exp, out, backend[0], jobs)["sessions"][:-1]
        if previous and "ended" not in previous[-1]:
            started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(previous[-1]["started"]))
            say(f"note: the previous session on {out} (started {started}) never ended: its "
                "`testbed run` was killed; its unfinished cells run again")  # fmt: skip
        for stale in (out / "cells").glob(".tmp-*"):  # cells cut short by a crash: never results
            shutil.rmtree(stale, ignore_errors=True)
        finished = done_cells(out)
        todo = [c for c in exp.cells if c.cell_id not in finished]
        say(f"{exp.name}: {len(exp.cells)} cells, {len(finished)} already done, {len(todo)} to run, "
            f"{jobs} at a time -> {out}")  # fmt: skip
        names = [f"{run[:4]}{slot}" for slot in range(jobs)]
        free = list(names)
        running: dict[subprocess.Popen[bytes], tuple[Cell, str, Path]] = {}
        failed: list[dict[str, Any]] = []
        bar = tqdm(total=len(exp.cells), initial=len(finished), unit="cell", disable=not progress,
                   dynamic_ncols=True)  # fmt: skip
        queue = list(todo)
        stop_reason: str | None = None
        try:
            while queue or running:
                short = _no_room(out, queue[0]) if queue and free else None
                if short:  # finish what runs, start nothing more: a cell would fill the disk
                    stop_reason = short
                    queue.clear()
                while queue and free:
                    cell = queue.pop(0)
                    name = free.pop(0)
                    log = out / "cells" / f".log-{cell.cell_id}"
                    with open(log, "wb") as err:
                        proc = subprocess.Popen(
                            [sys.executable, "-m", "testbed.experiment.cell", "--job",
                             _job(cell, exp, backend), "--out", str(out / "cells" / cell.cell_id),
                             "--name", name],
                            stdout=subprocess.DEVNULL, stderr=err, preexec_fn=_die_with_parent,
                        )  # fmt: skip
                    running[proc] = (cell, name, log)
                time.sleep(0.2)
                for proc in [p for p in running if p.poll() is not None]:
                    cell, name, log = running.pop(proc)
                    free.append(name)
                    if proc.returncode == 0:
                        log.unlink(missing_ok=True)
                        bar.update(1)
                        continue
                    reason = _failure(proc, cell, name, out, log)
                    failed.append(
                        {"cell_id": cell.cell_id, "params": cell.params, "reason": reason}
                    )
                    bar.write(f"cell {cell.cell_id} {cell.params} failed: {reason}")
        except KeyboardInterrupt as e:
            for proc in running:
                proc.send_signal(signal.SIGTERM)
            for proc in running:
                proc.wait()
            bar.close()
            _end_session(out, failed, interrupted=str(e) or "SIGINT")
            raise
        bar.close()
        _end_session(out, failed)
        if stop_reason:
            raise TestbedError(f"{stop_reason}; finished cells are kept: free space (or use another "
                               "-o) and rerun the same command")  # fmt: skip
        if failed:
            raise TestbedError(f"{len(failed)} cell(s) failed (logs in {out}/cells/.log-*; the last: "
                               f"{failed[-1]['reason']}); rerun the same command to retry them")  # fmt: skip
        return dict(json.loads((out / "run.json").read_text()))


def cell_bytes(cell: Cell) -> int:
    """About what a cell writes (two captures and two link logs of every packet, the logs
    copied once, plus tables): a floor for the free space a cell needs, not a promise."""
    st = cell.stream
    seconds = st.duration_s + st.warmup_s + st.drain_s + 3
    packets_per_s = st.bitrate_mbps * 1e6 / 8 / 1100 + 60  # media + feedback
    return int(seconds * packets_per_s * (2 * 2 * 280 + 2 * 2 * 100) + 4e6)


def _no_room(out: Path, cell: Cell) -> str | None:
    free, need = free_bytes(out), cell_bytes(cell)
    if free >= need:
        return None
    return (f"not enough space for the next cell on {out}: {free / 1e6:.1f} MB free, "
            f"a cell needs about {need / 1e6:.1f} MB")  # fmt: skip


def _failure(proc: subprocess.Popen[bytes], cell: Cell, name: str, out: Path, log: Path) -> str:
    """Why a cell failed, in words. A cell killed by a signal could not unwind: its topology
    (its ledger, whose owner is now gone) and its partial folder are removed here, so the slot's
    next cell starts clean."""
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
    for tmp in (out / "cells").glob(f".tmp-{cell.cell_id}-{proc.pid}"):  # what it could not remove
        shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode >= 0:
        full = disk_full(out)  # the cell could not even write its log: say why
        return " ".join(tail) or (f"{full}; the cell " if full else "") + exit_words(
            proc.returncode
        )
    ledger = Ledger(name)
    phase = ledger.phase()
    removed = 0
    if ledger.live() is None:
        with contextlib.suppress(TestbedError):
            removed = ledger.remove_all()
    when = f" during {phase}" if phase else ""
    return (f"the cell process (pid {proc.pid}) {exit_words(proc.returncode)}{when}; "
            f"{removed} object(s) it left were removed")  # fmt: skip


def _end_session(out: Path, failed: list[dict[str, Any]], interrupted: str | None = None) -> None:
    meta = dict(json.loads((out / "run.json").read_text()))
    meta["sessions"][-1].update(ended=time.time(), failed=failed)
    if interrupted:
        meta["sessions"][-1]["interrupted"] = interrupted
    meta["ended"] = time.time()
    try:
        write_json_atomic(out / "run.json", meta)
    except OSError as e:  # a full disk: the cells' own outcome is still said, and true
        print(
            f"testbed: could not record the session's end in {out / 'run.json'}: {e}",
            file=sys.stderr,
        )
