"""`testbed run --dry-run`: what an experiment would run, validated, without starting anything.
Pure: the loaded experiment (every cell's topology and stream already parsed and checked) and
the names of the cells a results folder already holds."""

from __future__ import annotations

from collections.abc import Set

from testbed.experiment.spec import Cell, Experiment
from testbed.rtc.spec import session_streams

CELL_OVERHEAD_S = 10.0  # set-up, connection, teardown and collection of a cell, as measured here


def streaming_s(cell: Cell) -> float:
    """How long a cell streams: its longest session's start + duration + drain."""
    return max(start + s.duration_s + s.drain_s for _, start, s in session_streams(cell.topology,
                                                                                     cell.stream))  # fmt: skip


def _short(value: object) -> str:
    """A grid value as a plan line can hold it (a session list by its names)."""
    if (
        isinstance(value, list)
        and value
        and all(isinstance(x, dict) and "name" in x for x in value)
    ):
        return "[" + ", ".join(str(x["name"]) for x in value) + "]"
    return str(value)


def plan_lines(exp: Experiment, done: Set[str], jobs: int) -> list[str]:
    """One line per configuration (its grid values, stacks, controller, sessions, streaming
    time, cells done / to run) and the totals, with a wall-time estimate."""
    lines = [f"{exp.name}: {len(exp.configs)} configuration(s) x {exp.repetitions} repetition(s)"
             + (f" (precision: up to {exp.repetitions_max})" if exp.precision else "")]  # fmt: skip
    total_s, todo = 0.0, 0
    for i, config in enumerate(exp.configs):
        cells = [exp.cell(i, r) for r in range(exp.repetitions)]
        left = [c for c in cells if c.cell_id not in done]
        seconds = streaming_s(cells[0])
        total_s += seconds * len(left)
        todo += len(left)
        runs = session_streams(config.topology, config.stream)
        what = "; ".join(f"{name + ': ' if name else ''}{s.stack_label()}, abr {s.abr}"
                         + (f" from {start:g} s" if start else "") for name, start, s in runs)  # fmt: skip
        values = ", ".join(f"{k}={_short(v)}" for k, v in config.values.items()) or "(no grid)"
        lines.append(f"  {values}: {what}; {seconds:g} s streamed; {len(cells) - len(left)} done, "
                     f"{len(left)} to run")  # fmt: skip
    wall = (total_s + CELL_OVERHEAD_S * todo) / max(1, jobs)
    early = any(c.stream.stop_when for c in exp.configs)
    lines.append(f"{todo} cell(s) to run, {'at most ' if early else ''}{total_s:.0f} s of "
                 f"streaming; about {wall / 60:.0f} min at {jobs} at a time"
                 + (" (stop_when ends cells early)" if early else "") + " (nothing was started)")  # fmt: skip
    return lines
