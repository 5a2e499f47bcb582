"""/proc/PID/stat, parsed in one place: process identity (pid + start time), state, CPU."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True)
class ProcStat:
    pid: int
    state: str  # R, S, D, Z (zombie), X (dead), ...
    session: int
    start_ticks: int  # clock ticks since boot: tells a reused pid from the process we started
    cpu_ticks: int  # user + system

    @property
    def finished(self) -> bool:
        return self.state in ("Z", "X")


def read_stat(pid: int) -> ProcStat | None:
    """The process's stat line, or None if it is gone (or unreadable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            text = f.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after its last ")"
    rest = text[text.rindex(")") + 2 :].split()
    return ProcStat(pid=pid, state=rest[0], session=int(rest[3]), start_ticks=int(rest[19]),
                    cpu_ticks=int(rest[11]) + int(rest[12]))  # fmt: skip


def all_stats() -> Iterator[ProcStat]:
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None:
                yield stat


def clock_ticks_per_s() -> int:
    return os.sysconf("SC_CLK_TCK")


def exit_words(returncode: int) -> str:
    """How a child ended, said for a person: 'exited with code 1', 'was killed by signal 9
    (SIGKILL)' (a Popen returncode: negative is the signal)."""
    if returncode > 128 and _signal_name(returncode - 128):
        return f"exited with code {returncode} (stopped by {_signal_name(returncode - 128)})"
    if returncode >= 0:
        return f"exited with code {returncode}"
    return f"was killed by signal {-returncode} ({_signal_name(-returncode) or 'unknown'})"


def _signal_name(signum: int) -> str | None:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return None
