"""The ResourceLedger: every kernel object and process a run creates, recorded BEFORE it is made.

The ledger is a JSON file under the state directory (default /run/rtc-testbed/<run>/). Undo
walks it in reverse, tolerates objects that are already gone, and touches nothing it did not
record — so `testbed clean` after a kill -9 removes exactly what the testbed made.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from testbed.errors import BusyError, LedgerError
from testbed.files import write_atomic
from testbed.net.forkguard import UNWIND_SIGNALS
from testbed.net.nsenter import NETNS_DIR
from testbed.procstat import all_stats, exit_words, read_stat

Entry = dict[str, Any]


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold Ctrl-C/SIGTERM until the block ends: for creations a signal must not cut in half
    (pyroute2 makes a namespace in a helper process; an interrupted parent would undo first
    and the helper would finish after)."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, UNWIND_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def state_root() -> Path:
    return Path(os.environ.get("RTC_TESTBED_STATE_DIR", "/run/rtc-testbed"))


def process_start_ticks(pid: int) -> int | None:
    """Start time of a live process in clock ticks since boot (tells a reused pid from ours)."""
    stat = read_stat(pid)
    return None if stat is None or stat.finished else stat.start_ticks


class Ledger:
    """Append-only record of one run's kernel state; undo() removes it in reverse order."""

    def __init__(self, run: str, root: Path | None = None) -> None:
        self.run = run
        self.dir = (root or state_root()) / run
        self.path = self.dir / "ledger.json"
        self._lock_fd: int | None = None

    # --- locking -------------------------------------------------------------------------
    def lock(self) -> None:
        """Hold the run's lock for this process's lifetime (or until unlock).

        The lock file may be removed by its holder (release_if_empty), so after flock we check
        that the path still names the file we locked; if not, we locked a removed file: retry.
        """
        for _ in range(100):
            self.dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(self.dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except FileNotFoundError:  # the directory went away between mkdir and open
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise BusyError(
                    f"topology {self.run!r} is being built or torn down by another testbed "
                    "process; wait for it, or choose another --name"
                ) from None
            try:
                same = os.stat(self.dir / "lock").st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self._lock_fd = fd
                return
            os.close(fd)
        raise BusyError(f"topology {self.run!r}: its lock file keeps changing; try again")

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def release_if_empty(self) -> None:
        """Unlock; if nothing is recorded and nothing but the lock is left (no logs, no state),
        remove the lock file and the run's directory too, so finished runs leave no trace."""
        if self._lock_fd is not None and self.is_empty():
            for done in (self.owner_path, self.phase_path):  # nothing recorded: nothing to own
                with contextlib.suppress(FileNotFoundError):
                    done.unlink()
            try:
                for p in self.dir.iterdir():  # an empty folder (logs nobody wrote) is no trace
                    if p.is_dir():
                        with contextlib.suppress(OSError):
                            p.rmdir()
                leftovers = {p.name for p in self.dir.iterdir()} - {"lock"}
            except FileNotFoundError:
                leftovers = set()
            if not leftovers:
                with contextlib.suppress(FileNotFoundError):
                    (self.dir / "lock").unlink()  # while locked: see lock()
                with contextlib.suppress(OSError):  # another process may be making a new one
                    self.dir.rmdir()
        self.unlock()

    # --- phase -----------------------------------------------------------------------------
    @property
    def phase_path(self) -> Path:
        return self.dir / "phase.json"

    def note_phase(self, phase: str) -> None:
        """What the run is doing (setup, connecting, streaming, teardown), for a person or a
        drill watching it from outside, and for errors that say when they happened."""
        write_atomic(self.phase_path, json.dumps({"phase": phase, "t_real": time.time()}))

    def phase(self) -> str | None:
        try:
            return str(json.loads(self.phase_path.read_text())["phase"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    # --- ownership -----------------------------------------------------------------------
    @property
    def owner_path(self) -> Path:
        return self.dir / "owner.json"

    def claim(self, detached: bool = False) -> None:
        """Record this process as the run's owner, before anything is built. detached: the run
        outlives it (`testbed up`): it stays live while it is up and its processes run."""
        pid = os.getpid()
        self.dir.mkdir(parents=True, exist_ok=True)
        owner = {"pid": pid, "start_ticks": process_start_ticks(pid), "detached": detached}
        write_atomic(self.owner_path, json.dumps(owner))

    def live(self) -> str | None:
        """Why the run is in use (None: its owner is gone and nothing keeps it: `clean` may
        remove it). A session is live while its owner process runs (pid + start time); a
        topology `up` left is live while it is up and every process it recorded still runs."""
        try:
            owner = json.loads(self.owner_path.read_text())
            pid, ticks, detached = int(owner["pid"]), owner["start_ticks"], bool(owner["detached"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if ticks is not None and process_start_ticks(pid) == int(ticks):
            return f"its owner, pid {pid}, is running"
        if not detached or not (self.dir / "state.json").exists():
            return None
        try:
            processes = [_pid_of(e) for e in self.entries() if e.get("kind") == "process"]
        except LedgerError:
            return None  # unreadable: nothing says it is in use (undo() then says what broke)
        if all(p is not None and process_start_ticks(p[0]) == p[1] for p in processes):
            return f"it is up (`testbed down --name {self.run}` ends it)"
        return None

    # --- recording -----------------------------------------------------------------------
    def entries(self) -> list[Entry]:
        """The recorded objects. A ledger that cannot be read is an error, never an empty list:
        an empty ledger would make `clean` forget what the run made."""
        try:
            data = json.loads(self.path.read_text())
            entries = data["entries"]
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                raise ValueError("'entries' is not a list of objects")
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise LedgerError(
                f"{self.path}: unreadable ledger ({e}); it lists what run {self.run!r} made, so "
                f"nothing was removed: restore the file, or remove the run's objects by hand "
                f"(`ip netns list | grep {self.run}-`) and delete {self.dir}"
            ) from None
        return list(entries)

    def _save(self, entries: list[Entry]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        write_atomic(self.path, json.dumps({"run": self.run, "entries": entries}, indent=1))

    def record(self, kind: str, **fields: Any) -> int:
        """Record an object about to be created; returns its index for update()."""
        entries = self.entries()
        entries.append({"kind": kind, **fields})
        self._save(entries)
        return len(entries) - 1

    def update(self, index: int, **fields: Any) -> None:
        entries = self.entries()
        entries[index].update(fields)
        self._save(entries)

    def is_empty(self) -> bool:
        return not self.entries()

    # --- undo ----------------------------------------------------------------------------
    def undo(self, say: Callable[[str], None] = lambda _: None) -> int:
        """Undo every entry, newest first. Returns how many objects were actually removed."""
        entries = self.entries()
        removed = 0
        for i in range(len(entries) - 1, -1, -1):
            entry = entries[i]
            undo = _UNDO.get(entry["kind"])
            if undo is None:  # never drop an entry unremoved: say what is missing
                raise LedgerError(f"{self.path}: no way to undo a {entry['kind']!r} entry is "
                                  "registered in this process (import the module that makes "
                                  "them, e.g. testbed.net.containers.hosts); it is kept")  # fmt: skip
            if undo(entry):
                removed += 1
                say(f"removed {entry['kind']} {entry.get('name') or entry.get('pid')}")
            entries.pop(i)
            self._save(entries)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        return removed

    def remove_all(self, say: Callable[[str], None] = lambda _: None) -> int:
        """Lock, undo everything, unlock, remove the state folder: what `clean` does to a run
        (BusyError if another process holds it, LedgerError if its ledger is unreadable, and
        then the state folder stays). Returns how many objects were removed."""
        self.lock()
        try:
            removed = self.undo(say)
        finally:
            self.unlock()
        self.remove_state()
        return removed

    def remove_state(self) -> None:
        """Delete the run's state directory (ledger, state, logs): only after undo()."""
        shutil.rmtree(self.dir, ignore_errors=True)


def _undo_netns(entry: Entry) -> bool:
    name = entry["name"]
    path = os.path.join(NETNS_DIR, name)
    if not os.path.exists(path):
        return False
    from pyroute2 import netns

    netns.remove(name)
    return True


def dead_link_processes(ledger: Ledger) -> list[str]:
    """The link processes (emulators, routers, schedulers) of a run that are no longer
    running, each said in words: which, its pid, and how it ended (when it was our child)."""
    out = []
    for entry in ledger.entries():
        found = _pid_of(entry) if entry.get("kind") == "process" and entry.get("link") else None
        if found is None or process_start_ticks(found[0]) == found[1]:
            continue
        how = "is gone"
        with contextlib.suppress(ChildProcessError):
            pid, status = os.waitpid(found[0], os.WNOHANG)
            if pid:
                how = exit_words(os.waitstatus_to_exitcode(status))
        out.append(f"{entry.get('what', 'a link process')} (pid {found[0]}) {how}")
    return out


def _pid_of(entry: Entry) -> tuple[int, int] | None:
    """(pid, start ticks) of a process entry: recorded, or from its pidfile."""
    if entry.get("pid") is not None and entry.get("start_ticks") is not None:
        return int(entry["pid"]), int(entry["start_ticks"])
    return _read_pidfile(entry.get("pidfile"))


def _read_pidfile(path: str | None) -> tuple[int, int] | None:
    if not path:
        return None
    try:
        pid_s, ticks_s = Path(path).read_text().split()
        return int(pid_s), int(ticks_s)
    except (OSError, ValueError):
        return None


def end_process(pid: int, start_ticks: int, grace_s: float = 3.0) -> bool:
    """SIGTERM, then SIGKILL, the process with this pid AND start time; nothing else."""
    if process_start_ticks(pid) != start_ticks:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if process_start_ticks(pid) != start_ticks:
            return True
        time.sleep(0.01)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    for _ in range(200):
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        if process_start_ticks(pid) != start_ticks:
            break
        time.sleep(0.01)
    return True


def session_members(sid: int, not_before_ticks: int) -> list[tuple[int, int]]:
    """(pid, start ticks) of live processes in session `sid` started no earlier than the
    session's leader: a session we created (start_new_session) keeps its id even after its
    leader dies, so its helpers are still ours to end."""
    return [
        (st.pid, st.start_ticks)
        for st in all_stats()
        if not st.finished and st.session == sid and st.start_ticks >= not_before_ticks
    ]


SESSION_SCANS = 20  # rounds of scan-and-kill for a session's processes

OWNED_FILE_ENV = "TESTBED_OWNED_FILE"


def note_owned(path: str | Path, *, pid: int | None = None, marker: str | None = None) -> None:
    """Called by a process the testbed started (its ledger entry names PATH) for what IT starts:
    `marker` (before the start: a path unique to this run that the new processes' command
    lines carry, e.g. a browser profile) and `pid` (after: its start time is read here). One
    small O_APPEND write per line, so two writers cannot tear each other's lines."""
    if marker is not None:
        line = f"marker {marker}\n"
    else:
        assert pid is not None
        line = f"pid {pid} {process_start_ticks(pid)}\n"
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        os.write(fd, line.encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def owned_processes(path: str | Path) -> list[tuple[int, int]]:
    """(pid, start ticks) of the live processes an owned file names: by pid + start time, and
    by a marker in their command line (helpers that re-parent to init, such as a browser's
    crash handler, or a child whose pid was never written because its parent died first)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return []
    found: dict[int, int] = {}
    markers = [ln[7:] for ln in lines if ln.startswith("marker ") and len(ln) > 12]
    live = [st for st in all_stats() if not st.finished]  # one pass over /proc (called each s)
    by_pid = {st.pid: st for st in live}
    for ln in lines:
        parts = ln.split()
        if len(parts) == 3 and parts[0] == "pid" and parts[2].isdigit():
            pid, ticks = int(parts[1]), int(parts[2])
            if pid in by_pid and by_pid[pid].start_ticks == ticks:
                found[pid] = ticks
    if markers:
        for st in live:
            if st.pid in found or st.pid == os.getpid():
                continue
            try:
                cmdline = Path(f"/proc/{st.pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if any(m in cmdline for m in markers):
                found[st.pid] = st.start_ticks
    # a browser leads its own session: its helpers too (as session_members, from the same pass)
    leaders = dict(found)
    for st in live:
        if st.session in leaders and st.start_ticks >= leaders[st.session]:
            found.setdefault(st.pid, st.start_ticks)
    return sorted(found.items())


def _remove_marked(owned_file: str) -> None:
    """The folders an owned file marks (a browser profile), once their processes are gone:
    only inside the owned file's own folder (the run's state folder), and what sits beside
    them under the same name (a video clip made for the browser)."""
    base = Path(owned_file).parent.resolve()
    try:
        lines = Path(owned_file).read_text().splitlines()
    except OSError:
        return
    for line in lines:
        if not line.startswith("marker "):
            continue
        marked = Path(line[7:]).resolve()
        if marked.parent != base:
            continue  # never outside the run's state folder
        shutil.rmtree(marked, ignore_errors=True)
        for extra in base.glob(f"{marked.name}-*"):
            with contextlib.suppress(OSError):
                extra.unlink()


def _kill_all(family: list[tuple[int, int]]) -> bool:
    """SIGKILL every (pid, start ticks) that is still that process, all first (helpers must
    not outlive a leader), then wait for each; True if any was ended."""
    for p, t in family:
        with contextlib.suppress(ProcessLookupError):
            if process_start_ticks(p) == t:
                os.kill(p, signal.SIGKILL)
    ended = False
    for p, t in family:
        ended = end_process(p, t, grace_s=0.5) or ended
    return ended


def _undo_process(entry: Entry) -> bool:
    ended = False
    if entry.get("owned_file"):  # what the process started, before the process itself
        ended = _kill_all(owned_processes(entry["owned_file"]))
        _remove_marked(entry["owned_file"])
        with contextlib.suppress(OSError):
            os.unlink(entry["owned_file"])
    pid, ticks = entry.get("pid"), entry.get("start_ticks")
    if entry.get("session") and pid is not None and ticks is not None:
        # a process that runs helpers of its own (user-mode-linux), in a session it leads.
        # Scan until the session is empty: a UML guest process, released when its kernel dies,
        # runs on the host and may fork after a scan (seen: the guest's `sleep 3600` left over)
        ended_any = False
        for _ in range(SESSION_SCANS):
            family = session_members(int(pid), int(ticks))
            if not family:
                break
            ended_any = True
            _kill_all(family)
        return ended_any
    known = {(pid, ticks)}
    from_file = _read_pidfile(entry.get("pidfile"))
    if from_file is not None:
        known.add(from_file)
    for known_pid, known_ticks in known:
        if known_pid is not None and known_ticks is not None:
            ended = end_process(int(known_pid), int(known_ticks)) or ended
    return ended


_UNDO: dict[str, Callable[[Entry], bool]] = {"netns": _undo_netns, "process": _undo_process}


def register_undo(kind: str, undo: Callable[[Entry], bool]) -> None:
    """How the ledger removes a kind of object another module makes (containers: registered by
    testbed.net.containers.hosts when it is imported). The ledger does not import its users:
    a process that undoes such entries imports the module that makes them (testbed.net.network
    does; so do `clean` and the sweep workers)."""
    _UNDO[kind] = undo


def all_runs(root: Path | None = None) -> list[str]:
    """Names of every run with a ledger under the state root."""
    base = root or state_root()
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if (p / "ledger.json").exists())


def write_pidfile(path: str) -> None:
    """Called by a child process first thing, so a crash of its parent cannot hide it."""
    pid = os.getpid()
    ticks = process_start_ticks(pid)
    write_atomic(Path(path), f"{pid} {ticks}\n")
