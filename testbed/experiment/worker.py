"""The worker's side of a sweep: what a host offers (its preflight), and the Dask task that runs
one cell there.

A task takes a self-contained job (resolved specs; input files as bytes addressed by hash),
runs `python -m testbed.experiment.cell` in its own process under a run name no other cell on
this host holds, and returns the finished cell folder as a tar. The client alone writes results,
so a cell retried after its worker died still lands once. A task whose future was cancelled
(Ctrl-C of the client, or the client vanished) tells its cell to unwind (SIGTERM) and returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import importlib.util
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError
from testbed.experiment.cell import failed_folder
from testbed.experiment.inputs import materialise
from testbed.files import disk_full
from testbed.net.containers import hosts as _hosts  # noqa: F401 (registers the undo of containers)
from testbed.net.ledger import Ledger
from testbed.procstat import exit_words, read_stat

PR_SET_PDEATHSIG = 1
TOPIC = "rtc-testbed-cell"  # the event topic a task reports start and end on (the progress bar)
MAX_SLOTS = 100


def _die_with_parent() -> None:
    """A cell whose worker (thread) dies gets SIGTERM and unwinds its topology."""
    libc = ctypes.CDLL(None)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def cell_cores(slot: int, cells: int) -> set[int] | None:
    """The cores of the cell in run-name slot `slot` (the N of prefixN) when `cells` cells
    divide this host's: the N-th share of them (every process the cell starts inherits it, emulators,
    endpoints, captures and browsers included); None: not pinned."""
    cores = sorted(os.sched_getaffinity(0))
    share = len(cores) // cells if cells > 0 else 0
    if share < 1:
        return None
    n = slot % cells
    return set(cores[n * share : (n + 1) * share])


def _start_cell(cores: set[int] | None) -> None:
    if cores:
        os.sched_setaffinity(0, cores)
    _die_with_parent()


# ---- what this host offers -------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """A host's preflight: what it cannot do at all (problems) and what it can (capabilities:
    backend-NAME, stack-NAME), and the record every cell run here carries."""

    problems: tuple[str, ...]
    capabilities: tuple[str, ...]
    host: dict[str, Any] = field(default_factory=dict)


def git_revision() -> str | None:
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=5)  # fmt: skip
        return out.stdout.strip() or None
    return None


def host_record() -> dict[str, Any]:
    """What `report` compares across a configuration's cells: the kind of host."""
    return {"name": platform.node(), "kernel": platform.release(), "machine": platform.machine(),
            "cpus": os.cpu_count(), "python": platform.python_version(),
            "testbed_revision": git_revision()}  # fmt: skip


def preflight(backends: tuple[str, ...] | None = None,
              stacks: tuple[str, ...] | None = None) -> Offer:  # fmt: skip
    """What `doctor` checks, as a worker needs it: root, namespaces, TUN (the emulator),
    tcpdump (every cell captures), user-mode-linux (netem-uml), Chromium. backends / stacks:
    offer only these (a host kept for one kind of cell)."""
    from testbed.rtc.chromium.browser import CHROMIUM
    from testbed.shaping.capabilities import probe_kernel
    from testbed.shaping.uml import uml_available

    problems: list[str] = []
    caps: list[str] = []
    if os.geteuid() != 0:
        return Offer(("not root: cells create network namespaces; run `testbed worker` as root",),
                     ())  # fmt: skip
    for tool in ("ip", "tcpdump"):
        if shutil.which(tool) is None:
            problems.append(
                f"{tool} is not installed (apt-get install {tool.replace('ip', 'iproute2')})"
            )
    try:
        # a scratch namespace named for this process: workers start side by side
        kernel = {c.name: c for c in probe_kernel(f"p{os.getpid() % 100000}")}
    except (TestbedError, OSError) as e:
        problems.append(f"cannot make a network namespace: {e}")
        kernel = {}
    if "TUN" in kernel and kernel["TUN"].ok:
        caps.append("backend-emu")
    if "qdisc netem" in kernel and kernel["qdisc netem"].ok:
        caps.append("backend-netem")
    if uml_available():
        caps.append("backend-netem-uml")
    if importlib.util.find_spec("aiortc") is not None:
        caps.append("stack-aiortc")
    if CHROMIUM.exists():
        caps.append("stack-chromium")
    if backends is not None:
        caps = [c for c in caps if not c.startswith("backend-") or c[8:] in backends]
    if stacks is not None:
        caps = [c for c in caps if not c.startswith("stack-") or c[6:] in stacks]
    if not any(c.startswith("backend-") for c in caps) and not problems:
        problems.append("no link backend works here (TUN for emu, sch_netem, or user-mode-linux)")
    return Offer(tuple(problems), tuple(caps), host_record())


def resources(offer: Offer, slots: int) -> dict[str, float]:
    """Dask resources: `cell` bounds how many cells run at once; a capability is offered with
    the same count, so a task asking for {cell: 1, backend-emu: 1} lands only where both are."""
    return {"cell": float(slots), **{c: float(slots) for c in offer.capabilities}}


def needs(backend: str, stacks: set[str]) -> dict[str, float]:
    """The resources one cell asks for."""
    return {"cell": 1.0, f"backend-{backend}": 1.0, **{f"stack-{s}": 1.0 for s in sorted(stacks)}}


# ---- run names: one per cell running on this host --------------------------------------------


class Slots:
    """Run names prefix0, prefix1, ...: each held by one running cell, across every worker
    process of this host (a lock file per name; the kernel frees it if the holder dies)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix[:4]
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def hold(self) -> Iterator[str]:
        folder = WORK_BASE / "slots"  # not under the state root: no run's folder
        folder.mkdir(parents=True, exist_ok=True)
        with self._lock:
            for n in range(MAX_SLOTS):
                name = f"{self.prefix}{n}"
                fd = os.open(folder / f"{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    os.close(fd)
            else:
                raise TestbedError(f"all {MAX_SLOTS} run names {self.prefix}N are in use here")
        try:
            yield name
        finally:
            os.close(fd)


# ---- this process as a worker ------------------------------------------------------------------


@dataclass
class _State:
    prefix: str = "wk"
    offer: Offer = field(default_factory=lambda: Offer((), ()))
    work: Path | None = None  # where cells are written before they travel [WORK_BASE/work-PID]


_STATE = _State()
WORK_BASE = Path(os.environ.get("RTC_TESTBED_WORK_DIR", "/var/tmp/rtc-testbed"))


def configure(prefix: str, offer: Offer, work: Path | None = None) -> Offer:
    """Set what this process's tasks run under: the prefix of their run names, the host record,
    the folder cells are written in (the embedded cluster: beside the results, on their disk)."""
    _STATE.prefix, _STATE.offer, _STATE.work = prefix[:4], offer, work
    return offer


def worker_info(dask_worker: Any = None) -> dict[str, Any]:
    """What the client asks every worker before the first cell (Client.run)."""
    return {"capabilities": list(_STATE.offer.capabilities), "host": _STATE.offer.host,
            "prefix": _STATE.prefix, "pid": os.getpid()}  # fmt: skip


# ---- the task --------------------------------------------------------------------------------

LIVE: set[subprocess.Popen[bytes]] = set()  # cells running in this process (stop_all)
_LIVE_LOCK = threading.Lock()
_SLOTS: dict[str, Slots] = {}


def work_root() -> Path:
    """Where this process's cells are written before they travel (a folder named for the
    process, so a dead worker's leftovers are known by its pid)."""
    return _STATE.work or WORK_BASE / f"work-{os.getpid()}"


def stop_all(grace_s: float = 30.0) -> None:
    """SIGTERM every cell this process runs (each unwinds its topology), and wait for them."""
    with _LIVE_LOCK:
        procs = list(LIVE)
    for proc in procs:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _cancelled() -> bool:
    """True when the scheduler no longer wants this task (its client cancelled or vanished) or
    the worker is closing; False when not running under a Dask worker."""
    try:
        from distributed import get_worker

        worker = get_worker()
        key = worker.get_current_task()
    except (ImportError, ValueError):
        return False
    ts = worker.state.tasks.get(key)
    return ts is None or ts.state != "executing" or worker.status.name not in ("running", "paused")


def _say(event: dict[str, Any]) -> None:
    with contextlib.suppress(ImportError, ValueError):
        from distributed import get_worker

        worker = get_worker()
        worker.log_event(TOPIC, {**event, "worker": str(worker.name), "address": worker.address,
                                 "host": platform.node()})  # fmt: skip


def _pack(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(folder, arcname=".")
    return buf.getvalue()


def _flags(cell: Path) -> list[str]:
    """What the cell's fidelity record flags (testbed.rtc.fidelity): the runner reruns it once."""
    try:
        return list(
            json.loads((cell / "cell.json").read_text()).get("fidelity", {}).get("flags", [])
        )
    except (OSError, ValueError):
        return []


def run_cell(job: dict[str, Any], blobs: Mapping[str, bytes]) -> dict[str, Any]:
    """The Dask task: {"ok": True, "tar": bytes, ...} or {"ok": False, "reason": words}."""
    host = _STATE.offer.host
    slots = _SLOTS.setdefault(_STATE.prefix, Slots(_STATE.prefix))
    started = time.time()
    cell_id = str(job["cell_id"])
    work = work_root()
    work.mkdir(parents=True, exist_ok=True)
    final = work / cell_id
    with slots.hold() as name:
        _say({"cell": cell_id, "state": "start", "name": name})
        try:
            job = {**materialise(job, blobs), "host": dict(host)}
            log = work / f".log-{cell_id}"
            with open(log, "wb") as err:
                cores = cell_cores(int(name[len(slots.prefix) :]), int(job.get("pin_cells") or 0))
                proc = subprocess.Popen(
                    [sys.executable, "-m", "testbed.experiment.cell", "--job", json.dumps(job),
                     "--out", str(final), "--name", name],
                    stdout=subprocess.DEVNULL, stderr=err,
                    preexec_fn=lambda: _start_cell(cores),
                )  # fmt: skip
            with _LIVE_LOCK:
                LIVE.add(proc)
            try:
                cancelled = _wait(proc)
            finally:
                with _LIVE_LOCK:
                    LIVE.discard(proc)
            if cancelled:  # the cell unwound on SIGTERM; nothing of it is kept
                log.unlink(missing_ok=True)
                return {"ok": False, "reason": "cancelled", "host": host["name"]}
            if proc.returncode != 0:
                reason = failure(proc, cell_id, name, work, log)
                kept = failed_folder(final)
                return {"ok": False, "reason": reason, "host": host["name"],
                        "kept": _pack(kept) if kept.is_dir() else None}  # fmt: skip
            log.unlink(missing_ok=True)
            return {"ok": True, "tar": _pack(final), "host": host["name"], "name": name,
                    "seconds": time.time() - started, "flags": _flags(final)}  # fmt: skip
        finally:
            shutil.rmtree(final, ignore_errors=True)
            shutil.rmtree(failed_folder(final), ignore_errors=True)
            _say({"cell": cell_id, "state": "end"})


def _wait(proc: subprocess.Popen[bytes]) -> bool:
    """Wait for the cell; True if it was told to stop because the task was cancelled."""
    while proc.poll() is None:
        if _cancelled():
            proc.send_signal(signal.SIGTERM)
            proc.wait()
            return True
        time.sleep(0.2)
    return False


def failure(proc: subprocess.Popen[bytes], cell_id: str, name: str, work: Path, log: Path) -> str:
    """Why a cell failed, in words. A cell killed by a signal could not unwind: its topology
    (its ledger, whose owner is now gone) and its partial folder are removed here, so the slot's
    next cell starts clean."""
    tail = log.read_text(errors="replace").strip().splitlines()[-1:] if log.exists() else []
    log.unlink(missing_ok=True)
    for tmp in work.glob(f".tmp-{cell_id}-{proc.pid}"):  # what it could not remove
        shutil.rmtree(tmp, ignore_errors=True)
    if proc.returncode >= 0:
        full = disk_full(work)  # the cell could not even write its log: say why
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


def release_work() -> None:
    """This process's work folder, once it runs no more cells (empty unless a cell is running)."""
    with contextlib.suppress(OSError):
        work_root().rmdir()


def remove_dead_work(base: Path = WORK_BASE, pattern: str = "work-") -> int:
    """Remove the work folders (base/PATTERN-PID) of worker processes that are gone: `testbed
    clean` for workers, `testbed run` for the embedded cluster's folder in the results."""
    removed = 0
    if not base.is_dir():
        return 0
    for folder in base.glob(f"{pattern}*"):
        pid = folder.name.removeprefix(pattern)
        stat = read_stat(int(pid)) if pid.isdigit() else None
        if pid.isdigit() and (stat is None or stat.finished):  # gone, or dead and not yet reaped
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed
