"""`testbed run`: every cell in its own fresh topology, atomically written, skipped when done.

results/NAME/run.json             metadata: experiment file (text and digest of it, its topology
                                  and its input files), git revision, versions, kernel, machine,
                                  backend; a session per run (cluster, workers, order seed, ...)
results/NAME/cells/ID/            one cell (frames.parquet, cell.json with `params` and `host`,
                                  pcaps, logs)

Every cell is a Dask task (testbed.experiment.worker.run_cell) on the embedded cluster or on a
running scheduler's workers; it comes back as a tar, is unpacked beside its place and renamed
there, so a cell appears whole or not at all, and once. A rerun skips cells whose folder exists.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import io
import json
import os
import platform
import random
import shutil
import sys
import tarfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from uuid import uuid4

from testbed.errors import ConfigError, TestbedError
from testbed.experiment.cluster import ALLOWED_FAILURES
from testbed.experiment.inputs import addressed, hashes_needed
from testbed.experiment.plan import Plan
from testbed.experiment.spec import Cell, Experiment
from testbed.experiment.tls import TlsFiles
from testbed.experiment.worker import TOPIC, git_revision, needs, remove_dead_work, run_cell
from testbed.files import free_bytes, fsync_dir, write_json_atomic
from testbed.versions import package_versions

Say = Callable[[str], None]
RERUN = "rerun"  # _settle: the cell's fidelity record flagged it; run it once more
FLAGGED = "flagged"  # where a flagged first run is kept (beside cells/, never a result)
FAILED = "failed"  # where a failed run's files are kept, one folder per attempt (never a result)
WORK = ".work-"  # results/NAME/cells/.work-PID: the embedded cluster's cells being written


def light(exp: Experiment) -> bool:
    """Every cell is one aiortc session with the synthetic source (no encoder, no browser, one
    pair): the cells measured to run two at a time on 2 cores with the same statistics."""
    return all(not c.topology.sessions and c.stream.source == "synthetic"
               and {c.stream.stack_of("sender"), c.stream.stack_of("receiver")} == {"aiortc"}
               for c in exp.configs)  # fmt: skip


def default_jobs(exp: Experiment | None = None) -> int:
    """Cells at once on the embedded cluster: one per core when every cell is light (measured:
    docs/experiments.md, two at a time on 2 cores gave the same statistics in half the time),
    else one per two cores (a cell encoding video or running browsers is not measured so)."""
    cores = len(os.sched_getaffinity(0)) or 2
    if exp is not None and light(exp):  # never more than its cells (one cell keeps every core)
        return max(1, min(cores, len(exp.configs) * exp.repetitions))
    return max(1, cores // 2)


def _changed(meta: dict[str, Any], exp: Experiment) -> str:
    """What differs between the results' experiment and this one, in words."""
    if "inputs" not in meta:
        return "an older testbed made them (its digest covered only the experiment file)"
    if meta.get("experiment_text") != exp.text:
        return f"the experiment file differs ({meta.get('experiment_source')})"
    if meta.get("topology_text", exp.topology_text) != exp.topology_text:
        return f"the topology file {exp.topology_path} changed"
    edited = [p for p, sha in exp.inputs.items() if meta["inputs"].get(p) != sha]
    if edited:
        return f"input file {edited[0]} changed (sha256 {exp.inputs[edited[0]][:12]}, was " + (
            f"{meta['inputs'][edited[0]][:12]})" if edited[0] in meta["inputs"] else "not used)"
        )
    return "the input files differ"


def check_same(out: Path, exp: Experiment) -> None:
    """Refuse results made by a different experiment, topology or input file (the digest
    covers all three)."""
    meta_path = out / "run.json"
    if not meta_path.exists():
        return
    meta: dict[str, Any] = json.loads(meta_path.read_text())
    if meta.get("experiment_digest") != exp.digest:
        raise ConfigError(
            str(out), "run.json",
            f"these results come from a different experiment: {_changed(meta, exp)} (digest "
            f"{meta.get('experiment_digest')}, now {exp.digest}); refusing to mix: use another -o",
        )  # fmt: skip


def prepare_results(
    exp: Experiment, out: Path, backend: str, session: dict[str, Any]
) -> dict[str, Any]:
    """Create or reopen the results folder; refuse one made by a different experiment, topology
    or input file (the digest covers all three)."""
    meta_path = out / "run.json"
    session = {"started": time.time(), **session}
    check_same(out, exp)
    if meta_path.exists():
        meta: dict[str, Any] = json.loads(meta_path.read_text())
        meta.setdefault("sessions", []).append(session)
    else:
        (out / "cells").mkdir(parents=True, exist_ok=True)
        meta = {
            "experiment": exp.name, "experiment_source": exp.source,
            "experiment_digest": exp.digest, "experiment_text": exp.text,
            "topology": exp.topology_path, "topology_text": exp.topology_text,
            "inputs": exp.inputs, "grid": exp.grid, "repetitions": exp.repetitions,
            "repetitions_max": exp.repetitions_max,
            "precision": exp.precision.__dict__ if exp.precision else None,
            "cells": len(exp.cells), "git_revision": git_revision(), "versions": package_versions(),
            "kernel": platform.release(), "machine": platform.machine(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "backend": backend,
            "sessions": [session],
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


def _job(cell: Cell, exp: Experiment, backend: tuple[str, str], pinned: int = 0) -> str:
    """A cell's job: its resolved specs as data (re-validated by the cell), never --set text;
    pinned: how many cells divide the worker host's cores (0: none)."""
    return json.dumps({
        "cell_id": cell.cell_id, "params": cell.params, "topology_source": exp.topology_path,
        "topology": cell.topology.to_dict(), "stream": cell.stream.to_dict(), "seed": cell.seed,
        "backend": backend[0], "backend_reason": backend[1], "experiment": exp.name,
        "pin_cells": pinned,
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


def containers_ready(exp: Experiment) -> None:
    """Container hosts: a daemon answers here and has every image (one line otherwise), before
    any cell starts. Workers on other machines check their own daemon when a cell starts."""
    from testbed.net.containers.hosts import preflight

    seen: set[tuple[str, ...]] = set()
    for config in exp.configs:
        images = tuple(c.image for c in config.topology.containers)
        if images and images not in seen:
            seen.add(images)
            preflight(config.topology)


@dataclass(frozen=True)
class RunOptions:
    """How a sweep runs. jobs: cells at once (embedded cluster); run: the name prefixing what
    the cells create; backend: (name, why) as choose_backend resolved it, once for every cell;
    cluster: a scheduler's address, or None for the embedded cluster of `jobs` workers; tls: the
    client's checked certificates for a tls:// cluster; order: shuffle (with order_seed,
    recorded; random when None) or grid."""

    jobs: int
    run: str
    backend: tuple[str, str]
    say: Say = lambda _: None
    progress: bool = True
    cluster: str | None = None
    order: str = "shuffle"
    order_seed: int | None = None
    tls: TlsFiles | None = None
    pin: bool | None = None  # each cell on its own cores: None = when the embedded cluster runs
    # several cells and this host has a core for each


def pin_cells(opts: RunOptions) -> int:
    """How many cells share this host's cores, each pinned to its own (0: no pinning). Only
    the embedded cluster pins (a remote worker's host is its own to divide)."""
    cores = len(os.sched_getaffinity(0))
    if opts.cluster is not None or opts.pin is False:
        return 0
    if opts.pin is None:
        return opts.jobs if 1 < opts.jobs <= cores else 0
    if opts.jobs > cores:
        raise ConfigError("--jobs", str(opts.jobs), f"more cells at once than this host's {cores} "
                          f"cores to pin them to; valid with --pin: at most {cores}")  # fmt: skip
    return opts.jobs


def run_experiment(exp: Experiment, out: Path, opts: RunOptions) -> dict[str, Any]:
    """Every cell of exp not already done in out; returns run.json."""
    from testbed.experiment.cluster import able_workers, open_cluster

    seed = (
        opts.order_seed if opts.order_seed is not None else random.SystemRandom().randrange(2**31)
    )
    stacks = {s for c in exp.configs for s in (c.stream.stack_of("sender"),
                                               c.stream.stack_of("receiver"))}  # fmt: skip
    need = needs(opts.backend[0], stacks)
    check_same(out, exp)  # before anything is started or written
    containers_ready(exp)
    work = out / "cells" / f"{WORK}{os.getpid()}"
    with open_cluster(opts.cluster, opts.jobs, opts.run, work, opts.tls) as cl:
        able = able_workers(cl, need)
        out.mkdir(parents=True, exist_ok=True)
        with _results_lock(out):
            return _run_on(cl, able, exp, out, replace(opts, order_seed=seed), need)


def _run_on(cl: Any, able: list[str], exp: Experiment, out: Path, opts: RunOptions,
            need: dict[str, float]) -> dict[str, Any]:  # fmt: skip
    """run_experiment on a cluster whose workers can run the cells, the results locked."""
    from tqdm import tqdm

    from testbed.experiment.cluster import scatter_inputs

    jobs, cluster, say, backend = opts.jobs, opts.cluster, opts.say, opts.backend
    session = {"jobs": jobs, "cluster": cluster or "embedded", "order": opts.order,
               "pinned": pin_cells(opts),
               "order_seed": opts.order_seed if opts.order == "shuffle" else None}  # fmt: skip
    previous = prepare_results(exp, out, backend[0], session)["sessions"][:-1]
    if previous and "ended" not in previous[-1]:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(previous[-1]["started"]))
        say(f"note: the previous session on {out} (started {started}) never ended: its "
            "`testbed run` was killed; its unfinished cells run again")  # fmt: skip
    for stale in (out / "cells").glob(".tmp-*"):  # cells cut short by a crash: never results
        shutil.rmtree(stale, ignore_errors=True)
    remove_dead_work(out / "cells", WORK)  # an embedded cluster's, its `testbed run` killed
    plan = Plan(exp, done_cells(out))
    assert opts.order_seed is not None  # run_experiment drew it
    todo = plan.initial(opts.order, opts.order_seed)
    where = f"{jobs} at a time" if cluster is None else f"on the cluster {cluster}"
    say(f"{exp.name}: {sum(plan.scheduled)} cells, {len(plan.finished)} already done, "
        f"{len(todo)} to run, {where} -> {out}")  # fmt: skip
    failed: list[dict[str, Any]] = []
    if cluster is not None:
        say(f"{len(able)} of {len(cl.workers)} workers can run these cells: "
            + ", ".join(sorted({cl.workers[a]['host']['name'] for a in able})))  # fmt: skip
    _note_workers(out, cl.workers)
    sweep = _Sweep(exp, out, backend, cl, need, scatter_inputs(cl, exp.inputs), plan)
    sweep.pinned = pin_cells(opts)
    bar = tqdm(total=sum(plan.scheduled), initial=len(plan.finished), unit="cell",
               disable=not opts.progress, dynamic_ncols=True)  # fmt: skip
    try:
        sweep.go(todo, bar, failed)
    except KeyboardInterrupt as e:
        sweep.cancel()
        bar.close()
        _end_session(out, failed, interrupted=str(e) or "SIGINT", reruns=sweep.reruns)
        raise
    bar.close()
    _end_session(out, failed, precision=sweep.intervals(), reruns=sweep.reruns)
    if sweep.stop_reason:
        raise TestbedError(f"{sweep.stop_reason}; finished cells are kept: free space (or use "
                           "another -o) and rerun the same command")  # fmt: skip
    if failed:
        raise TestbedError(f"{len(failed)} cell(s) failed (the last: {failed[-1]['reason']}); "
                           "rerun the same command to retry them")  # fmt: skip
    return dict(json.loads((out / "run.json").read_text()))


class _Sweep:
    """The cells in flight: submitted as Dask tasks, settled as they finish (written whole
    into the results, or failed with a reason), refined when precision: asks for more."""

    def __init__(self, exp: Experiment, out: Path, backend: tuple[str, str], cl: Any,
                 need: dict[str, float], blobs: dict[str, Any], plan: Plan) -> None:  # fmt: skip
        self.exp, self.out, self.backend, self.cl = exp, out, backend, cl
        self.need, self.blobs, self.plan = need, blobs, plan
        self.futures: dict[Any, tuple[int, Cell]] = {}
        self.ids: set[str] = set()  # every cell this run submitted
        self.labels = ({a: f"w{i}" for i, a in enumerate(sorted(cl.workers))}
                       if cl.address == "embedded" else {})  # fmt: skip
        self.running: dict[str, str] = {}  # cell id -> the worker running it
        self.stop_reason: str | None = None
        self.reruns: dict[str, list[str]] = {}  # cell id -> why its first run was flagged
        self.pinned = 0  # cells dividing the host's cores (pin_cells)
        self._priority = 0
        self._status = ""
        cl.client.subscribe_topic(TOPIC, self._event)

    def _event(self, event: Any) -> None:
        msg = event[1] if isinstance(event, tuple) else event
        if msg.get("cell") not in self.ids:  # another client's cell on a shared cluster
            return
        if msg.get("state") == "start":  # embedded workers: w0, w1, ...; others say host-pid
            self.running[msg["cell"]] = self.labels.get(msg.get("address"), str(msg["worker"]))
        else:
            self.running.pop(msg.get("cell"), None)

    def submit(self, cells: list[tuple[int, Cell]], first: bool = False) -> None:
        """Dask runs higher priorities first: the given order, added repetitions first."""
        for i, (config, cell) in enumerate(cells):
            job = addressed(json.loads(_job(cell, self.exp, self.backend, self.pinned)),
                            self.exp.inputs)  # fmt: skip
            blobs = {sha: self.blobs[sha] for sha in hashes_needed(job)}
            self.ids.add(cell.cell_id)  # before its start event can arrive
            priority = len(cells) - i if first else 10**9 - self._priority
            self._priority += 1
            fut = self.cl.client.submit(run_cell, job, blobs, key=f"cell-{cell.cell_id}-{uuid4().hex[:8]}",
                                        resources=self.need, priority=priority, pure=False)  # fmt: skip
            self.futures[fut] = (config, cell)

    def go(self, todo: list[tuple[int, Cell]], bar: Any, failed: list[dict[str, Any]]) -> None:
        if todo and (short := _no_room(self.out, todo[0][1])):
            self.stop_reason = short
            return
        self.submit(todo, first=True)
        for config in range(len(self.exp.configs)):  # a rerun: configurations already settled
            self._refine(config, bar)
        while self.futures:
            done = [f for f in self.futures if f.done()]
            if not done:
                time.sleep(0.2)
            for fut in done:
                config, cell = self.futures.pop(fut)
                reason = self._settle(fut, cell)
                if reason == RERUN:  # disturbed: kept aside, run once more
                    bar.write(f"cell {cell.cell_id} {cell.params} rerun: "
                              + "; ".join(self.reruns[cell.cell_id]))  # fmt: skip
                    self.submit([(config, cell)])
                    continue
                self.plan.settled(config, cell.cell_id, reason is None)
                if reason is None:
                    bar.update(1)
                else:
                    failed.append(
                        {"cell_id": cell.cell_id, "params": cell.params, "reason": reason}
                    )
                    bar.write(f"cell {cell.cell_id} {cell.params} failed: {reason}")
                self._refine(config, bar)
                if self.futures and (short := _no_room(self.out, cell)):
                    self.stop_reason = short  # finish nothing more: a cell would fill the disk
                    self.cancel()
                    return
            per_worker = sorted(collections.Counter(self.running.values()).items())
            status = (f"running {' '.join(f'{w}:{n}' for w, n in per_worker) or '-'}, "
                      f"failed {len(failed)}")  # fmt: skip
            if status != self._status:  # (a disabled bar has no postfix of its own)
                self._status = status
                bar.set_postfix_str(status, refresh=False)

    def _refine(self, config: int, bar: Any) -> None:
        more = self.plan.refine(config, self._statistic)
        if more:
            bar.total += len(more)
            bar.refresh()
            self.submit(more)

    def _statistic(self, ids: Sequence[str]) -> list[float]:
        from testbed.analysis.load import load_frames
        from testbed.analysis.metrics import cell_table

        assert self.exp.precision is not None
        table = cell_table(load_frames(self.out, only=set(ids))).set_index("cell_id")
        return [float(table.loc[i, f"latency_{self.exp.precision.metric}_ms"]) for i in ids]

    def _settle(self, fut: Any, cell: Cell) -> str | None:
        """Write a finished cell whole into the results (None), or say why it failed."""
        from distributed import KilledWorker

        if fut.status == "error":
            exc = fut.exception()
            if isinstance(exc, KilledWorker):  # the scheduler's own limit (ours when embedded)
                deaths = int(getattr(exc, "allowed_failures", ALLOWED_FAILURES)) + 1
                return (f"its worker died {deaths} times while running it (the last: "
                        f"{exc.last_worker.address if exc.last_worker else '?'}): the cell was "
                        "retried elsewhere and never finished")  # fmt: skip
            return f"internal error on the worker: {type(exc).__name__}: {exc}"
        if fut.status == "cancelled":
            return "cancelled (its worker left the cluster?)"
        res = fut.result()
        if not res["ok"]:
            aside = keep_failed_cell(self.out, cell.cell_id, res.get("kept"))
            return f"{res['reason']} (on {res['host']})" + (
                f"; its files: {aside}" if aside else ""
            )
        if res.get("flags") and cell.cell_id not in self.reruns:
            self.reruns[cell.cell_id] = list(res["flags"])
            write_cell(self.out / FLAGGED / cell.cell_id, res["tar"])  # the evidence, aside
            return RERUN
        write_cell(self.out / "cells" / cell.cell_id, res["tar"])
        return None

    def cancel(self) -> None:
        """Every cell still in flight is told to stop: each unwinds its topology on its worker."""
        from testbed.experiment.worker import stop_all

        self.cl.client.cancel(list(self.futures))
        if self.cl.address == "embedded":  # in this process: do not leave it to the next poll
            stop_all()
        self.futures.clear()

    def intervals(self) -> list[dict[str, object]] | None:
        if self.exp.precision is None:
            return None
        return [self.plan.interval(i, self._statistic) for i in range(len(self.exp.configs))
                if self.plan.done_ids(i)]  # fmt: skip


def _extract_data(tar: tarfile.TarFile, into: Path) -> None:
    """Regular files and folders only, inside INTO: tarfile's "data" filter where this Python
    has it (3.11.4+), the same refusal by hand on Debian 12's own 3.11.2."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(into, filter="data")
        return
    base = into.resolve()
    for member in tar.getmembers():
        target = (into / member.name).resolve()
        if not (member.isfile() or member.isdir()) or not target.is_relative_to(base):
            raise TestbedError(f"a cell's archive holds {member.name!r}, which is not a plain "
                               "file inside its folder")  # fmt: skip
    tar.extractall(into)


def keep_failed_cell(out: Path, cell_id: str, tar_bytes: bytes | None) -> Path | None:
    """What a failed cell wrote (logs, link logs, failure.txt), in RESULTS/failed/CELL-N/ (N
    counts its failed attempts): the evidence to diagnose it from; None if nothing came back."""
    if not tar_bytes:
        return None
    attempt = len(list((out / FAILED).glob(f"{cell_id}-*"))) + 1
    final = out / FAILED / f"{cell_id}-{attempt}"
    final.parent.mkdir(exist_ok=True)
    try:
        write_cell(final, tar_bytes, need="failure.txt")
    except (OSError, TestbedError):  # best effort: the failure's reason is said regardless
        return None
    return final


def write_cell(final: Path, tar_bytes: bytes, need: str = "cell.json") -> None:
    """Unpack a cell that came back from a worker beside its place and rename it there: the
    cell appears whole or not at all, and once (a cell that is already there stays)."""
    if final.exists():
        return
    tmp = final.with_name(f".tmp-{final.name}-client{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
            _extract_data(tar, tmp)
        if not (tmp / need).exists():
            raise TestbedError(f"cell {final.name} came back without its {need}")
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    fsync_dir(final.parent)


def _note_workers(out: Path, workers: dict[str, dict[str, Any]]) -> None:
    meta = dict(json.loads((out / "run.json").read_text()))
    meta["sessions"][-1]["workers"] = [
        {"address": a, **w["host"], "capabilities": w["capabilities"]} for a, w in workers.items()
    ]
    write_json_atomic(out / "run.json", meta)


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


def _end_session(out: Path, failed: list[dict[str, Any]], interrupted: str | None = None,
                 precision: list[dict[str, object]] | None = None,
                 reruns: dict[str, list[str]] | None = None) -> None:  # fmt: skip
    meta = dict(json.loads((out / "run.json").read_text()))
    meta["sessions"][-1].update(ended=time.time(), failed=failed)
    if reruns:
        meta["sessions"][-1]["reruns"] = [{"cell": c, "why": w} for c, w in reruns.items()]
    if precision is not None:
        meta["sessions"][-1]["precision"] = precision
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
