"""Which cells a run still owes, in what order, and which repetitions `precision:` adds.

Pure bookkeeping (no Dask, no files), so the order and the stopping rule are tested alone.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from testbed.experiment.precision import more_repetitions
from testbed.experiment.spec import Cell, Experiment

ORDERS = ("shuffle", "grid")


@dataclass
class Plan:
    """Per configuration: how many repetitions are scheduled, which are still pending.

    A rerun picks up repetitions an earlier session added (their cells are in the results)."""

    exp: Experiment
    finished: set[str]
    scheduled: list[int] = field(default_factory=list)
    pending: list[set[str]] = field(default_factory=list)
    failed: set[int] = field(default_factory=set)  # configurations not refined further

    def __post_init__(self) -> None:
        most = max(self.exp.repetitions, self.exp.repetitions_max)
        for i in range(len(self.exp.configs)):
            done = [k for k in range(most) if self.exp.cell(i, k).cell_id in self.finished]
            self.scheduled.append(max([self.exp.repetitions, *(k + 1 for k in done)]))
            self.pending.append(set())

    def initial(self, order: str, seed: int) -> list[tuple[int, Cell]]:
        """Every scheduled cell not yet finished, as (configuration, cell), in run order."""
        todo = [(i, self.exp.cell(i, k)) for i in range(len(self.exp.configs))
                for k in range(self.scheduled[i])
                if self.exp.cell(i, k).cell_id not in self.finished]  # fmt: skip
        if order == "shuffle":
            random.Random(seed).shuffle(todo)
        for i, cell in todo:
            self.pending[i].add(cell.cell_id)
        return todo

    def settled(self, config: int, cell_id: str, ok: bool) -> None:
        self.pending[config].discard(cell_id)
        if ok:
            self.finished.add(cell_id)
        else:
            self.failed.add(config)

    def done_ids(self, config: int) -> list[str]:
        return [self.exp.cell(config, k).cell_id for k in range(self.scheduled[config])
                if self.exp.cell(config, k).cell_id in self.finished]  # fmt: skip

    def refine(
        self, config: int, statistic: Callable[[Sequence[str]], Sequence[float]]
    ) -> list[tuple[int, Cell]]:
        """After a configuration's pending cells are all settled: the repetitions its interval
        still needs (none without precision:, after a failed cell, or at repetitions_max).
        statistic: cell ids -> each cell's latency statistic."""
        precision = self.exp.precision
        if precision is None or self.pending[config] or config in self.failed:
            return []
        ids = self.done_ids(config)
        add, _ = more_repetitions(statistic(ids), precision, len(ids), self.exp.repetitions_max)
        start = self.scheduled[config]
        self.scheduled[config] += add
        new = [(config, self.exp.cell(config, k)) for k in range(start, start + add)]
        for _, cell in new:
            self.pending[config].add(cell.cell_id)
        return new

    def interval(
        self, config: int, statistic: Callable[[Sequence[str]], Sequence[float]]
    ) -> dict[str, object]:
        """What the run.json records per configuration when precision: is set."""
        assert self.exp.precision is not None
        ids = self.done_ids(config)
        _, (lo, hi, mean) = more_repetitions(statistic(ids), self.exp.precision, len(ids), 0)
        return {"params": self.exp.configs[config].values, "repetitions": len(ids),
                "mean_ms": mean, "lo_ms": lo, "hi_ms": hi,
                "met": self.exp.precision.met(lo, hi, mean)}  # fmt: skip
