"""The controllers AI-viewer work compares (cap, margin, accuracy-capped), the curve they read,
getStats figures as feedback events, the drop-aware latency (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from testbed.abr.base import Feedback
from testbed.abr.curve import CurveError, accuracy_at, lowest_reaching, read_curve
from testbed.abr.driver import AbrDriver
from testbed.abr.registry import make
from testbed.errors import ConfigError
from testbed.rtc.chromium.control import StatsFeedback
from testbed.rtc.framelog import drop_aware_latency

CURVE = [(0.1, 0.2), (0.3, 0.6), (0.6, 0.9), (1.2, 0.92)]


def test_lowest_bitrate_reaching_a_threshold_is_interpolated() -> None:
    assert lowest_reaching(CURVE, 0.8) == (pytest.approx(0.5), True)
    assert lowest_reaching(CURVE, 0.1) == (0.1, True)
    assert lowest_reaching(CURVE, 0.95) == (1.2, False)  # never: its most accurate bitrate
    assert accuracy_at(CURVE, 0.45) == pytest.approx(0.75) and accuracy_at(CURVE, 9) == 0.92


def test_curves_from_bench_viewer_json_and_report_csv(tmp_path: Path) -> None:
    points = [{"achieved_mbps": m, "accuracy": a, "roi": "uniform"} for m, a in CURVE]
    points += [{"achieved_mbps": 0.2, "accuracy": 1.0, "roi": "ROI"}]
    (tmp_path / "c.json").write_text(json.dumps({"points": points}))
    assert read_curve(tmp_path / "c.json") == CURVE
    rows = ["video,roi,achieved_mbps,accuracy", "a,uniform,0.1,0.1", "b,none,0.1,0.3",
            "a,uniform,0.5,0.9", "a,ROI,0.5,1.0"]  # fmt: skip
    (tmp_path / "c.csv").write_text("\n".join(rows))
    assert read_curve(tmp_path / "c.csv") == [(0.1, pytest.approx(0.2)), (0.5, 0.9)]
    (tmp_path / "bad.csv").write_text("roi,achieved_mbps,accuracy\nuniform,x,1\n")
    for bad, words in (("bad.csv", "without a number"), ("none.json", "cannot be read"),
                       ("c.json", "fewer than 2")):  # fmt: skip
        with pytest.raises(CurveError, match=words):
            read_curve(tmp_path / bad, roi="ROI" if bad == "c.json" else "uniform")


def test_a_cap_without_a_usable_curve_is_one_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        make("accuracy_cap", {"curve": str(tmp_path / "no.json")}, 1e6, 30)
    assert e.value.key == "stream.abr_params.curve" and "cannot be read" in e.value.message
    with pytest.raises(ConfigError, match="curve"):
        make("accuracy_cap", {}, 1e6, 30)
    with pytest.raises(ConfigError, match="cap_mbps"):
        make("cap", {}, 1e6, 30)


def remb(t: float, mbps: float) -> Feedback:
    return Feedback(t, "remb", remb_bps=mbps * 1e6)


def test_cap_and_margin_follow_the_stacks_estimate() -> None:
    cap = make("cap", {"cap_mbps": 1.0}, 2e6, 30)
    assert cap.update(Feedback(0, "tick")) == 1e6
    assert cap.update(remb(1, 0.4)) == 0.4e6 and cap.update(remb(2, 3.0)) == 1e6
    margin = make("margin", {"margin_mbps": 0.5}, 2e6, 30)
    assert margin.update(remb(1, 3.0)) == 2.5e6 and margin.update(remb(2, 0.5)) == 0.05e6


def test_accuracy_cap_keeps_a_rate_that_meets_the_threshold_and_climbs_otherwise(
    tmp_path: Path,
) -> None:
    path = tmp_path / "curve.json"
    path.write_text(json.dumps({"points": [{"achieved_mbps": m, "accuracy": a} for m, a in CURVE]}))
    c = make("accuracy_cap", {"curve": str(path), "threshold": 0.8}, 0.2e6, 30)
    assert c.update(remb(0, 5.0)) == 0.2e6  # below the cap (0.5 Mbps): climbs from here
    t = [c.update(Feedback(ms, "tick")) for ms in range(200, 30_000, 200)]
    assert t[0] > 0.2e6 and max(t) == pytest.approx(0.5e6) and t[-1] == pytest.approx(0.5e6)
    assert c.update(remb(30_000, 0.3)) == 0.3e6  # never above the estimate
    high = make("accuracy_cap", {"curve": str(path), "threshold": 0.8}, 1.0e6, 30)
    assert high.update(remb(0, 5.0)) == pytest.approx(0.5e6)  # the cap is a ceiling from the start
    flat = [(0.1, 0.5), (0.2, 0.85), (0.3, 0.8), (0.6, 0.95)]  # meets 0.8 from 0.2 on, with a dip
    path.write_text(json.dumps({"points": [{"achieved_mbps": m, "accuracy": a} for m, a in flat]}))
    keep = make("accuracy_cap", {"curve": str(path), "threshold": 0.8}, 0.2e6, 30)
    cap = (0.1 + 0.3 / 0.35 * 0.1) * 1e6  # 0.8 crossed between 0.1 and 0.2 Mbps
    assert keep.update(remb(0, 5.0)) == pytest.approx(cap)  # meets 0.8 there: kept
    assert keep.update(Feedback(9000, "tick")) == pytest.approx(cap)
    assert keep.update(remb(10_000, 0.15)) == pytest.approx(0.15e6)  # the estimate fell under
    assert 0.15e6 < keep.update(remb(11_000, 5.0)) <= cap  # the estimate back up: it climbs


def test_a_controllers_error_names_it_the_event_and_the_value() -> None:
    class Nan:
        def update(self, feedback: Feedback) -> float:
            return float("nan")

    d = AbrDriver(Nan(), 1e6, name="mine")
    assert d.feed(Feedback(1234, "report")) == 1e6
    assert d.first_error is not None
    assert d.first_error.startswith("mine at a report event (1234 ms)") and "nan" in d.first_error


def test_getstats_figures_become_the_same_events_as_on_aiortc() -> None:
    fb = StatsFeedback()
    snap = {"t": 10_000.0, "captured": 300,
            "sent": {"packets": 900, "nacks": 0, "t": 9_990.0, "encoded": 290, "target": 1e6},
            "remote": {"fractionLost": 0.05, "packetsLost": 40, "rtt": 0.061, "t": 9_700.0},
            "pair": {"available": 2.5e6, "rtt": 0.06, "t": 9_990.0}}  # fmt: skip
    kinds = [(e.kind, e.age_ms) for e in fb.events(snap, 1.0)]
    assert kinds == [("report", 300.0), ("remb", 10.0), ("tick", 10.0)]
    tick = fb.events(snap, 1.0)[-1]
    assert (tick.frames_dropped, tick.frames_encoded, tick.stack_target_bps) == (10, 290, 1e6)
    report = fb.events(snap, 1.0)  # the same report again: not new
    assert [e.kind for e in report] == ["remb", "tick"]
    snap2 = {
        **snap,
        "sent": {"packets": 990, "nacks": 3},
        "remote": {**snap["remote"], "t": 10_500.0},
    }
    events = {e.kind: e for e in fb.events({**snap2, "t": 10_600.0}, 2.0)}
    assert events["nack"].nack_packets == 3 and events["report"].packets_sent == 990
    assert events["report"].rtt_ms == pytest.approx(61.0) and events["report"].loss_fraction == 0.05


def test_drop_aware_latency_waits_for_the_next_complete_frame() -> None:
    t = pd.DataFrame({
        "frame_id": [0, 1, 2, 3, 4, 5],
        "status": ["complete", "lost", "lost", "complete", "not_sent", "lost"],
        "sent_first_ns": pd.array([0, 33, 66, 100, None, 166], dtype="Int64"),
        "complete_ns": pd.array([40, None, None, 190, None, None], dtype="Int64"),
        "latency_ns": pd.array([40, None, None, 90, None, None], dtype="Int64"),
    })  # fmt: skip
    got = drop_aware_latency(t).tolist()
    assert got[:4] == [40, 190 - 33, 190 - 66, 90] and pd.isna(got[4]) and pd.isna(got[5])


def test_steps_and_the_reaction_to_each() -> None:
    from testbed.bench.reaction import step_reactions

    steps = make("steps", {"levels_mbps": [1.0, 0.25], "every_s": 1}, 1e6, 30)
    assert [steps.update(Feedback(ms, "tick")) for ms in (0, 999, 1000, 2500)] == [
        1e6,
        1e6,
        0.25e6,
        1e6,
    ]
    # 30 fps frames: 1 Mbps until 1.3 s (the stack took 0.3 s), then 0.25 Mbps, then 1 Mbps at 2.1 s
    t = np.arange(0, 3.0, 1 / 30)
    size = np.where(t < 1.3, 1e6, np.where(t < 2.1, 0.25e6, 1e6)) / 8 / 30
    frames = pd.DataFrame({"sent_first_ns": pd.array((t * 1e9).astype("int64"), dtype="Int64"),
                           "size_bytes": size.astype("int64")})  # fmt: skip
    control = pd.DataFrame({"t_ns": [0, int(1e9), int(2e9)], "target_bps": [1e6, 0.25e6, 1e6]})
    r = step_reactions(frames, control)
    assert r.direction.tolist() == ["down", "up"]
    assert 0.3 <= r.reaction_s[0] <= 0.6 and 0.05 <= r.reaction_s[1] <= 0.35, r
