"""How sessions shared a bottleneck (pure): rates per second, Jain's index, convergence, the
per-session report, checked against numbers worked out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from testbed.analysis.sessions import session_table
from testbed.rtc.sharing import convergence, flow_rates, jain, sharing

S = 1_000_000_000


def frames(rates: dict[str, list[float]], t0: int = 7 * S) -> pd.DataFrame:
    """One 1-second 'frame' per flow and second carrying rate Mbps (0: none sent)."""
    rows = [{"session": name, "sent_first_ns": t0 + i * S + 1, "wire_bytes": mbps * 1e6 / 8,
             "rtx_bytes": 0, "fec_bytes": 0}
            for name, per_s in rates.items() for i, mbps in enumerate(per_s) if mbps]  # fmt: skip
    return pd.DataFrame(rows)


def test_jain_by_hand() -> None:
    assert jain([1, 1, 1]) == pytest.approx(1.0)
    assert jain([3, 0]) == pytest.approx(0.5)  # one of two takes all: 1/n
    assert jain([2, 1]) == pytest.approx(9 / 10)  # (3)^2 / (2 * 5)
    assert jain([]) is None and jain([0, 0]) is None


def test_rates_per_second_per_flow() -> None:
    r = flow_rates(frames({"a": [2, 2, 3], "b": [0, 1, 1]}), 7 * S)
    assert r.loc[2, "a"] == pytest.approx(3) and r.loc[0, "b"] == 0 and r.loc[1, "b"] == 1


def test_convergence_after_a_join_is_when_both_stay_within_20_percent_of_fair() -> None:
    # a alone 0-9 s; b joins at 4 s: unfair until 7 s, then both within 20% of 1.5
    a = [3, 3, 3, 3, 2.5, 2.2, 2.0, 1.6, 1.5, 1.5]
    b = [0, 0, 0, 0, 0.5, 0.8, 1.0, 1.4, 1.5, 1.5]
    rates = flow_rates(frames({"a": a, "b": b}), 7 * S)
    events = convergence(rates, {"a": (0.0, 10.0), "b": (4.0, 10.0)})
    assert len(events) == 1 and events[0]["event"] == "join b"
    # 2-s means: s7 (1.8, 1.2), s8 (1.55, 1.45), s9 (1.5, 1.5): fair share 1.5, band 0.3: from
    # second 7 (|1.8-1.5| = 0.3 is within) on: converged 7 + 1 - 4 = 4 s after the join
    assert events[0]["converged_after_s"] == pytest.approx(4.0)
    never = convergence(flow_rates(frames({"a": [3] * 10, "b": [0, 0, 0, 0] + [0.2] * 6}), 7 * S),
                        {"a": (0.0, 10.0), "b": (4.0, 10.0)})  # fmt: skip
    assert never[0]["converged_after_s"] is None


def test_sharing_and_the_session_report(tmp_path: Path) -> None:
    f = frames({"a": [2] * 10, "b": [0, 0, 0, 0] + [1] * 6})
    sessions = {"a": {"start_s": 0, "stream": {"duration_s": 10}},
                "b": {"start_s": 4, "stream": {"duration_s": 6}}}  # fmt: skip
    sh = sharing(f, sessions, capacity_mbps=4)
    assert sh["window_s"] == [4.0, 10.0] and sh["jain"] == pytest.approx(0.9)
    assert sh["utilisation"] == pytest.approx((2 * 10 + 6) / 10 / 4)
    cell = tmp_path / "cells" / "c1"
    cell.mkdir(parents=True)
    summary = {"frames": 10, "complete": 9, "achieved_mbps": 2.0,
               "latency_ms": {"p50": 40.0, "p95": 50.0, "p99": 60.0}}  # fmt: skip
    meta = {
        name: {**s, "summary": summary, "stack": {"label": "aiortc"}}
        for name, s in sessions.items()
    }
    (cell / "cell.json").write_text(json.dumps({"params": {"repetition": 0}, "sessions": meta,
                                                "sharing": sh}))  # fmt: skip
    table = session_table(tmp_path)
    assert list(table.session) == ["a", "b"] and table.completion.tolist() == [0.9, 0.9]
    assert table.window_mbps.tolist() == pytest.approx([2.0, 1.0])
    assert table.convergence[0] == "join b: never"  # 2 vs 1 Mbps: a third off the fair 1.5
