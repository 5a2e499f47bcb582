"""The interrupt drill: `testbed stream` or `testbed run` is sent Ctrl-C (SIGINT) or SIGTERM at
one phase, then the promises are checked: it exits 128 + the signal (130 / 143), nothing of
the topology is left (namespaces, links, processes, containers, the state folder), and no
partial output exists: a stream's folder is whole (with cell.json) or absent, a sweep has no
partial cell, and a rerun of the sweep completes it with the cell exactly once.

  python -m tests.system.interrupts                 the whole matrix, a Markdown table (root)
  python -m tests.system.interrupts stream chromium only cases whose labels contain these

The command is started with SIGINT *ignored*, as a non-interactive shell starts a background
job (CI's case, where a Ctrl-C test of container hosts once failed): the testbed must take the
signal anyway. Variants: aiortc between namespace hosts, Chromium between namespace hosts,
aiortc into a container host (needs the Docker daemon and the endpoint image), and a cell of
two sessions (Chromium + aiortc) on the routed dumbbell (stream only).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from testbed.net.ledger import Ledger
from tests.conftest import ROOT
from tests.system.drill import (
    EXPERIMENT,
    _leftovers,
    _settle,
    _whole_cells,
    run_all,
    signal_at,
)

COMMANDS = ("stream", "run")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
MOMENTS = ("setup", "mid", "teardown", "writing")
VARIANTS = ("aiortc", "chromium", "container", "sessions")
# two sessions in one cell over the dumbbell: a Chromium pair, and an aiortc pair joining at 1 s
SESSIONS = ("sessions=[{name: a, sender: s1, receiver: r1, stream: {stack: chromium}},"
            " {name: b, sender: s2, receiver: r2, start_s: 1}]")  # fmt: skip
ENDPOINT = "rtc-testbed/endpoint:latest"
STREAM_ARGS = ["--bitrate-mbps", "1", "--duration-s", "4", "--set", "uplink.loss_pct=1",
               "--stream-set", "warmup_s=0", "--stream-set", "drain_s=0.5"]  # fmt: skip
CONTAINER_TOPOLOGY = f"""name: interruptctr
hosts:
  - sender
  - name: receiver
    image: {ENDPOINT}
links:
  - name: path
    between: [sender, receiver]
    uplink: {{rate_mbps: 10, delay_ms: 30}}
    downlink: {{rate_mbps: 10, delay_ms: 30}}
"""


@dataclass
class Outcome:
    command: str
    variant: str
    signal: str
    moment: str
    killed: str  # "pid N during PHASE", or why no signal was sent
    exit_code: int | None
    output: str  # "absent", "whole" or what partial output was found
    left: list[str]
    rerun: str  # run: "1 cell" when the rerun completed the sweep; stream: "-"
    seconds: float

    def expected_exit(self) -> int:
        return 128 + signal.Signals[self.signal].value

    def ok(self) -> bool:
        """Promises kept (a signal that never found its moment is no failure of the testbed, if
        the command then ended well)."""
        if not self.killed.startswith("pid"):
            return not self.left and self.exit_code == 0 and self.output == "whole"
        good_exit = self.exit_code == self.expected_exit() or (
            self.exit_code == 0 and self.output == "whole"  # the signal came after the end
        )
        return good_exit and self.output in ("absent", "whole") and not self.left and (
            self.command == "stream" or self.rerun == "1 cell")  # fmt: skip


def _topology(workdir: Path, variant: str) -> Path:
    if variant == "sessions":
        return ROOT / "topologies" / "dumbbell.yaml"
    if variant != "container":
        return ROOT / "topologies" / "p2p.yaml"
    p = workdir / "container.yaml"
    p.write_text(CONTAINER_TOPOLOGY)
    return p


def _containers(run: str) -> list[str]:
    from testbed.net.containers import daemon

    if not daemon.answers(daemon.address()):
        return []
    found = daemon.connect().containers.list(all=True, filters={"label": f"rtc-testbed.run={run}"})
    return [f"container {c.name}" for c in found]


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # as `cmd &` in a non-interactive shell


def _command(command: str, variant: str, workdir: Path, run: str) -> tuple[list[str], Path]:
    topology = _topology(workdir, variant)
    stack = "chromium" if variant == "chromium" else "aiortc"
    base = [sys.executable, "-m", "testbed.cli", command]
    if command == "stream":
        out = workdir / "stream"
        args = (
            STREAM_ARGS
            if variant != "sessions"
            else [
                *(a for a in STREAM_ARGS if a not in ("--set", "uplink.loss_pct=1")),
                "--set",
                SESSIONS,
            ]
        )
        return [*base, str(topology), *args, "--stack", stack, "-o", str(out), "--name",
                run, "--backend", "emu"], out  # fmt: skip
    exp = workdir / "drill.yaml"
    exp.write_text(EXPERIMENT.format(topology=topology, stack=stack))
    out = workdir / "results"
    return [*base, str(exp), "-o", str(out), "--name", run, "--backend", "emu"], out


def _stream_output(out: Path) -> str:
    staged = [p.name for p in out.parent.glob(f".tmp-{out.name}-*")]
    if staged:
        return "partial: " + ", ".join(staged)
    if not out.exists():
        return "absent"
    names = {p.name for p in out.iterdir()}
    if {"cell.json", "frames.parquet"} <= names:
        return "whole"
    return "partial: " + ", ".join(sorted(names))


def _run_output(out: Path) -> str:
    partial = [p.name for p in (out / "cells").glob(".tmp-*")] if (out / "cells").is_dir() else []
    if partial:
        return "partial: " + ", ".join(partial)
    return "whole" if _whole_cells(out) else "absent"


def run_case(command: str, variant: str, sig: signal.Signals, moment: str, workdir: Path,
             run: str) -> Outcome:  # fmt: skip
    """One drill: COMMAND streaming VARIANT, sent SIG at MOMENT, then the checks."""
    t0 = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    argv, out = _command(command, variant, workdir, run)
    before = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    root_ns = os.stat("/proc/self/ns/net").st_ino
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            preexec_fn=_ignore_sigint)  # fmt: skip
    watched = Ledger(run if command == "stream" else f"{run[:4]}0")
    killed = signal_at(sig, moment, watched, proc, lambda: proc.pid, command)
    try:
        said, _ = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        proc.kill()
        said, _ = proc.communicate()
    _settle(watched.run, before, root_ns)
    left = _leftovers(watched.run, before, root_ns) + _containers(watched.run)
    output = _stream_output(out) if command == "stream" else _run_output(out)
    rerun = "-"
    if command == "run":
        again = subprocess.run(argv, capture_output=True, text=True, timeout=150)
        cells = _whole_cells(out)
        rerun = "1 cell" if again.returncode == 0 and len(cells) == 1 else (
            f"exit {again.returncode}, {len(cells)} cell(s): {again.stderr.strip()[-200:]}")  # fmt: skip
        left = sorted(set(left) | set(_leftovers(watched.run, before, root_ns)))
    if proc.returncode not in (0, 128 + sig.value) and said:
        killed += f" (it said: {said.strip().splitlines()[-1][:160]})"
    return Outcome(command, variant, sig.name, moment, killed, proc.returncode, output, left,
                   rerun, time.monotonic() - t0)  # fmt: skip


def matrix(variants: tuple[str, ...] = VARIANTS) -> list[tuple[str, str, signal.Signals, str]]:
    return [(c, v, s, m) for c in COMMANDS for v in variants for s in SIGNALS for m in MOMENTS
            if (c, v) != ("run", "sessions")]  # fmt: skip


def label(command: str, variant: str, sig: signal.Signals, moment: str) -> str:
    return f"{command}-{variant}-{sig.name}-{moment}"


def table(outcomes: list[Outcome]) -> str:
    rows = ["| command | stack / host | signal | moment | sent | exit | output | left behind "
            "| rerun |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for o in outcomes:
        rows.append(f"| {o.command} | {o.variant} | {o.signal} | {o.moment} | {o.killed} | "
                    f"{o.exit_code} | {o.output} | {', '.join(o.left) or 'nothing'} | "
                    f"{o.rerun} |")  # fmt: skip
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    cases = [c for c in matrix() if all(word in label(*c) for word in argv)]
    return run_all(cases, run_case, table, "i")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
