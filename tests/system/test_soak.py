"""Soak (tests.system.soak): a grid three times back to back in one process leaves nothing that
grows from one pass to the next. CI soaks a two-cell grid; `pytest -m drill` the quick grid."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.system.soak import soak, table

SMALL = """name: soak
topology: {topology}
stream: {{source: synthetic, bitrate_mbps: 2, duration_s: 3, warmup_s: 0, drain_s: 0.5}}
grid: {{uplink.loss_pct: [0, 2]}}
repetitions: 1
seed: 1
"""


def _no_growth(rows: list[dict[str, float]]) -> None:
    print(table(rows))
    base, second, last = rows[0], rows[2], rows[-1]
    for key in ("netns", "interfaces", "state_folders"):
        assert all(r[key] == base[key] for r in rows), (key, table(rows))
    for key in ("open_files", "threads"):
        assert last[key] <= second[key], (key, table(rows))
    assert last["processes"] <= base["processes"] + 2, table(rows)
    assert last["rss_mb"] <= second["rss_mb"] * 1.05 + 10, table(rows)


def test_a_small_grid_three_times_grows_nothing(run: str, tmp_path: Path) -> None:
    exp = tmp_path / "soak.yaml"
    exp.write_text(SMALL.format(topology=ROOT / "topologies" / "p2p.yaml"))
    _no_growth(soak(exp, 3, run))


@pytest.mark.drill
def test_the_quick_grid_three_times_grows_nothing(run: str) -> None:
    _no_growth(soak(ROOT / "experiments" / "quick.yaml", 3, run))
