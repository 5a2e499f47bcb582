"""stop_when (pure): what is valid, the interval, and the rule that decides."""

from __future__ import annotations

import numpy as np
import pytest

from testbed.errors import ConfigError
from testbed.rtc.spec import parse_stream
from testbed.rtc.stopping import Stopper, StopWhen, interval, parse_stop_when


def test_the_order_statistic_interval_holds_the_true_quantile_about_95_percent_of_the_time() -> (
    None
):
    rng = np.random.default_rng(1)
    truth = 30 + float(np.percentile(rng.exponential(10, 1_000_000), 95))
    held = 0
    for _ in range(400):
        _, lo, hi = interval(30 + rng.exponential(10, 300), "p95")
        held += lo <= truth <= hi
    assert 0.91 <= held / 400 <= 0.99, held / 400
    m, lo, hi = interval(np.array([1.0, 2.0, 3.0, 4.0]), "mean")
    assert m == 2.5 and lo < 2.5 < hi
    assert interval(np.arange(10.0), "p99")[1] == -np.inf  # too few frames for p99


def test_a_lossless_stream_stops_once_settled_and_a_lossy_one_waits_for_its_hit_frames() -> None:
    rule = StopWhen(metric="p95", ci_ms=2.0, ci_pct=None, min_s=4, min_frames=150, min_hit=10)
    quiet = Stopper(rule)
    for v in 33 + np.random.default_rng(2).normal(0, 0.3, 200):
        quiet.add(float(v))
    assert quiet.met(3.9) is None  # before min_s
    got = quiet.met(6.0)
    assert got is not None and got["frames"] == 200 and got["high_ms"] - got["low_ms"] <= 4
    lossy = Stopper(rule, rtt_ms=60, loss_heard=True)
    for v in 33 + np.random.default_rng(3).normal(0, 0.3, 200):
        lossy.add(float(v))  # a lucky streak: loss heard, no frame delayed yet
    assert lossy.met(6.0) is None
    for _ in range(12):
        lossy.add(100.0)  # frames a retransmission delayed
    assert lossy.met(7.0) is None  # now the tail is wide: not settled either


@pytest.mark.parametrize(
    ("value", "key", "words"),
    [
        ({"metric": "p90"}, "stream.stop_when.metric", "valid: p50, p95, p99, mean"),
        ({"min_s": 30}, "stream.stop_when.min_s", "above duration_s 20"),
        ({"ci_ms": None, "ci_pct": None}, "stream.stop_when", "needs ci_ms or ci_pct"),
        ({"ci_ms": -1}, "stream.stop_when.ci_ms", "out of range"),
        ({"after": 3}, "stream.stop_when.after", "unknown key"),
    ],
)
def test_bad_stop_when(value: dict[str, object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_stream({"duration_s": 20, "stop_when": value}, "t")
    assert e.value.key == key and words in e.value.message, str(e.value)


def test_stop_when_needs_an_aiortc_pair() -> None:
    with pytest.raises(ConfigError, match="only an aiortc pair"):
        parse_stream({"stop_when": {"metric": "p95"}, "receiver_stack": "chromium"}, "t")
    assert parse_stop_when(None, 20, "t") is None
