"""The fault drill: kill one process kind of a one-cell sweep, with one signal, at one moment,
then check the testbed's promises: the cell is whole or absent (no partial folder), a failure
says which process, how and when, nothing of the run is left, and a rerun completes the sweep
with the cell exactly once.

  python -m tests.system.drill            the whole matrix as a Markdown table (root; ~30 min)
  python -m tests.system.drill KIND ...   only these kinds

The moment is read from the cell run's phase (testbed.net.ledger.Ledger.note_phase): setup
(namespaces, captures, endpoints connecting), mid (1 s into streaming), teardown (after the
sender's `done`: endpoints closing, captures stopping, links going down) and, for the client and
the cell process, writing (the topology is gone, the frame table is being written).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from testbed.net.ledger import Ledger, owned_processes, process_start_ticks
from testbed.net.nsenter import NETNS_DIR
from testbed.procstat import exit_words
from tests.conftest import ROOT

EXPERIMENT = """name: drill
topology: {topology}
stream: {{source: synthetic, bitrate_mbps: 1, duration_s: 4, warmup_s: 0, drain_s: 0.5,
          stack: {stack}}}
grid: {{uplink.loss_pct: [1]}}
repetitions: 1
seed: 1
"""
KINDS = ("client", "cell", "emulator-uplink", "emulator-downlink", "sender", "receiver",
         "tcpdump", "router", "browser")  # fmt: skip
SIGNALS = (signal.SIGKILL, signal.SIGTERM)
MOMENTS = ("setup", "mid", "teardown", "writing")
WRITING_KINDS = ("client", "cell")  # the others are gone once the topology is down


@dataclass
class Outcome:
    kind: str
    signal: str
    moment: str
    killed: str  # "pid N during PHASE", or why nothing was killed
    result: str  # "cell whole" or "failed: <reason>"
    left: list[str]  # what of the run was left afterwards (empty: nothing)
    rerun: str  # "1 cell" when the rerun completed the sweep with the cell exactly once
    seconds: float
    kept: list[str] = field(default_factory=list)  # files kept aside in RESULTS/failed/

    def ok(self) -> bool:
        return not self.left and self.rerun == "1 cell" and self.killed.startswith("pid")


def _victim(kind: str, client: subprocess.Popen[str], cell_run: Ledger) -> int | None:
    """The pid of KIND in the sweep, once it exists (None: not yet)."""
    if kind == "client":
        return client.pid
    if kind == "cell":  # by its command line: its ledger's owner file goes with the topology
        for name in os.listdir("/proc"):
            cmd = _cmdline(int(name)) if name.isdigit() else ""
            if "testbed.experiment.cell" in cmd and f"--name {cell_run.run}" in cmd:
                return int(name)
        return None
    try:
        entries = cell_run.entries()
    except Exception:
        return None
    for e in entries:
        what = str(e.get("what", ""))
        pid = e.get("pid")
        if kind.startswith("emulator-") and what == f"emulator path-{kind.split('-')[1]}":
            pidfile = Path(str(e.get("pidfile")))
            return int(pidfile.read_text().split()[0]) if pidfile.exists() else None
        if kind == "router" and what.startswith("user-mode-linux router") and pid:
            return int(pid)
        if kind == "tcpdump" and what == "tcpdump in receiver" and pid:
            return int(pid)
        if kind in ("sender", "receiver") and what.endswith(f"in {kind}") and "tcpdump" not in what:
            return int(pid) if pid else None
        if kind == "browser" and what.endswith("in sender") and e.get("owned_file"):
            for found, _ in owned_processes(str(e["owned_file"])):
                if "--type=" not in _cmdline(found):
                    return found
    return None


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _moment_reached(moment: str, phase: str | None, seen: set[str], since: float) -> bool:
    if moment == "setup":
        return phase in ("setup", "connecting")
    if moment == "mid":
        return phase == "streaming" and time.monotonic() - since >= 1.0
    if moment == "teardown":
        return phase == "teardown"
    return phase is None and "teardown" in seen  # writing: the topology is gone


def _moment_past(moment: str, phase: str | None, seen: set[str]) -> bool:
    later = {
        "setup": ("streaming", "teardown"),
        "mid": ("teardown",),
        "teardown": (),
        "writing": (),
    }
    return phase in later[moment] or (moment != "writing" and phase is None and "teardown" in seen)


def _leftovers(cell_run: str, before: set[int], root_ns: int) -> list[str]:
    left = (
        [f"netns {n}" for n in os.listdir(NETNS_DIR) if n.startswith(f"{cell_run}-")]
        if os.path.isdir(NETNS_DIR)
        else []
    )
    for line in subprocess.run(
        ["ip", "-o", "link"], capture_output=True, text=True
    ).stdout.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(f"{cell_run}-"):
            left.append(f"link {name}")
    others = set()  # namespaces other runs hold now (another test or session on this host)
    for n in os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []:
        if not n.startswith(f"{cell_run}-"):
            with contextlib.suppress(OSError):
                others.add(os.stat(os.path.join(NETNS_DIR, n)).st_ino)
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in before or int(name) == os.getpid():
            continue
        pid = int(name)
        try:
            netns = os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            continue
        cmd = _cmdline(pid)
        if cmd and ((netns != root_ns and netns not in others) or cell_run in cmd):
            left.append(f"process {pid} ({cmd[:60]})")
    if Ledger(cell_run).dir.exists():
        left.append(f"state folder {Ledger(cell_run).dir}")
    return left  # fmt: skip


def _reasons(out: Path) -> list[str]:
    try:
        sessions = json.loads((out / "run.json").read_text())["sessions"]
    except (OSError, ValueError, KeyError):
        return []
    return [
        str(f.get("reason", f))
        for s in sessions
        for f in s.get("failed", [])
        if isinstance(f, dict)
    ]


def _whole_cells(out: Path) -> list[Path]:
    cells = out / "cells"
    if not cells.is_dir():
        return []
    return [p for p in cells.iterdir() if not p.name.startswith(".")
            and (p / "cell.json").exists() and (p / "frames.parquet").exists()]  # fmt: skip


def run_case(kind: str, sig: signal.Signals, moment: str, workdir: Path, run: str) -> Outcome:
    """One drill: a fresh one-cell sweep, KIND killed with SIG at MOMENT, then the checks."""
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    stack = "chromium" if kind == "browser" else "aiortc"
    exp = workdir / "drill.yaml"
    exp.write_text(EXPERIMENT.format(topology=ROOT / "topologies" / "p2p.yaml", stack=stack))
    out = workdir / "results"
    cmd = [sys.executable, "-m", "testbed.cli", "run", str(exp), "-o", str(out), "--name", run,
           "--backend", "netem" if kind == "router" else "emu"]  # fmt: skip
    before = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    root_ns = os.stat("/proc/self/ns/net").st_ino
    client = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cell_run = Ledger(f"{run[:4]}0")  # the runner's name for its first slot
    killed = _kill_at(kind, sig, moment, client, cell_run)
    try:
        said, _ = client.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        client.kill()
        said, _ = client.communicate()
        said += "\n(the client did not end within 150 s)"
    _settle(cell_run.run, before, root_ns)
    whole = _whole_cells(out)
    partial = list((out / "cells").glob(".tmp-*")) if (out / "cells").is_dir() else []
    reasons = _reasons(out)
    if whole and not partial:
        result = "cell whole"
    elif reasons:
        result = "failed: " + reasons[-1]
    else:  # the client could not say it (killed): the cell's log, and the rerun, do
        logs = sorted((out / "cells").glob(".work-*/.log-*"))
        lines = [
            ln for p in logs for ln in p.read_text(errors="replace").splitlines() if ln.strip()
        ]
        result = "failed: " + (lines[-1] if lines else f"client {exit_words(client.returncode)}")
    left = _leftovers(cell_run.run, before, root_ns) + [f"partial {p.name}" for p in partial]
    kept = sorted(str(p.relative_to(out / "failed")) for p in (out / "failed").rglob("*")
                  if p.is_file())  # fmt: skip
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=150)
    if "never ended" in again.stdout:
        result += "; the rerun said the previous session never ended"
    left = sorted(set(left) | set(_leftovers(cell_run.run, before, root_ns)))
    cells = _whole_cells(out)
    rerun = "1 cell" if again.returncode == 0 and len(cells) == 1 else (
        f"exit {again.returncode}, {len(cells)} cell(s): {again.stderr.strip()[-200:]}")  # fmt: skip
    return Outcome(kind, sig.name, moment, killed, result, left, rerun,
                   time.monotonic() - t0, kept)  # fmt: skip


def _kill_at(kind: str, sig: signal.Signals, moment: str, client: subprocess.Popen[str],
             cell_run: Ledger) -> str:  # fmt: skip
    return signal_at(sig, moment, cell_run, client, lambda: _victim(kind, client, cell_run), kind)


def signal_at(sig: signal.Signals, moment: str, watched: Ledger, proc: subprocess.Popen[str],
              victim: Callable[[], int | None], what: str) -> str:  # fmt: skip
    """Send SIG to victim() once WATCHED's run reaches MOMENT (while PROC runs): "pid N during
    PHASE", or why nothing was sent."""
    seen: set[str] = set()
    streaming_since = 0.0
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and proc.poll() is None:
        phase = watched.phase()
        if phase and phase not in seen:
            seen.add(phase)
            streaming_since = time.monotonic() if phase == "streaming" else streaming_since
        if _moment_reached(moment, phase, seen, streaming_since):
            pid = victim()
            if pid is not None and process_start_ticks(pid) is not None:
                os.kill(pid, sig)
                return f"pid {pid} during {phase or 'writing'}"
        if _moment_past(moment, phase, seen):
            return f"no {what} alive during {moment}"
        time.sleep(0.005)
    return f"the moment never came (phases seen: {', '.join(sorted(seen)) or 'none'})"


def _settle(cell_run: str, before: set[int], root_ns: int, timeout_s: float = 30) -> None:
    """A killed client's cells unwind by themselves (SIGTERM from the kernel): let them."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _leftovers(cell_run, before, root_ns):
        time.sleep(0.2)


def matrix(kinds: tuple[str, ...] = KINDS) -> list[tuple[str, signal.Signals, str]]:
    return [(k, s, m) for k in kinds for s in SIGNALS for m in MOMENTS
            if m != "writing" or k in WRITING_KINDS]  # fmt: skip


def table(outcomes: list[Outcome]) -> str:
    rows = ["| process | signal | moment | killed | outcome | left behind | rerun |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for o in outcomes:
        result = o.result.replace("|", "/")
        rows.append(f"| {o.kind} | {o.signal} | {o.moment} | {o.killed} | {result[:160]} | "
                    f"{', '.join(o.left) or 'nothing'} | {o.rerun} |")  # fmt: skip
    return "\n".join(rows)


class _Case(Protocol):
    seconds: float

    def ok(self) -> bool: ...


def run_all(cases: Sequence[tuple[Any, ...]], run_one: Callable[..., _Case],
            table_of: Callable[[list[Any]], str], prefix: str) -> int:  # fmt: skip
    """Each case with a fresh run name and folder, then the table and a count; 1 if any case
    broke a promise."""
    import secrets
    import tempfile

    from tqdm import tqdm

    outcomes = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(tqdm(cases, unit="case")):
            run = prefix + secrets.token_hex(2)[:3] + "x"
            outcomes.append(run_one(*case, Path(tmp) / str(i), run))
    print(table_of(outcomes))
    bad = [o for o in outcomes if not o.ok()]
    print(f"\n{len(outcomes)} cases, {len(bad)} not kept their promises, "
          f"{sum(o.seconds for o in outcomes):.0f} s")  # fmt: skip
    return 1 if bad else 0


def main(argv: list[str]) -> int:
    return run_all(matrix(tuple(argv) or KINDS), run_case, table, "d")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
