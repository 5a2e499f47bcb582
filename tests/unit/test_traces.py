from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from testbed.config.traces import OPPORTUNITY_BYTES, load_trace, parse_trace, piecewise_trace
from testbed.errors import ConfigError


def test_loops_with_last_timestamp_as_period() -> None:
    t = parse_trace("1\n1\n5\n10\n", "x.trace")
    assert t.period_ms == 10
    assert [t.opportunity_ns(i) // 1_000_000 for i in range(8)] == [1, 1, 5, 10, 11, 11, 15, 20]


def test_first_index_includes_opportunity_at_exact_time_across_loops() -> None:
    t = parse_trace("0\n4\n10\n", "x.trace")
    # at 10 ms two opportunities coincide: the last of period 0 and the first of period 1
    i = t.first_index_at_or_after(10_000_000)
    assert i == 2 and t.opportunity_ns(i) == 10_000_000
    assert t.first_index_at_or_after(10_000_001) == 4  # 14 ms


@given(st.lists(st.integers(0, 50), min_size=1, max_size=30), st.integers(0, 10**9))
def test_first_index_is_the_first_at_or_after(gaps: list[int], t_ns: int) -> None:
    stamps = []
    acc = 1
    for g in gaps:
        acc += g
        stamps.append(acc)
    trace = parse_trace("\n".join(map(str, stamps)), "h.trace")
    i = trace.first_index_at_or_after(t_ns)
    assert trace.opportunity_ns(i) >= t_ns
    assert i == 0 or trace.opportunity_ns(i - 1) < t_ns


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("", ""),
        ("1\nabc\n", "line 2"),
        ("5\n3\n", "line 2"),
        ("-1\n", "line 1"),
        ("0\n0\n", "line 2"),
    ],
)
def test_malformed_traces_name_the_line(text: str, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_trace(text, "bad.trace")
    assert e.value.source == "bad.trace" and e.value.key == key


def test_missing_file(tmp_path: object) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_trace("/nonexistent/x.trace")


def test_piecewise_trace_has_the_asked_rate() -> None:
    stamps = piecewise_trace([(2, 10), (2, 3)])
    trace = parse_trace("\n".join(map(str, stamps)), "p")
    first = trace.capacity_bytes(0, 2_000_000_000) * 8 / 2 / 1e6
    second = trace.capacity_bytes(2_000_000_000, 4_000_000_000) * 8 / 2 / 1e6
    assert first == pytest.approx(10, rel=0.01)
    assert second == pytest.approx(3, rel=0.01)
    assert OPPORTUNITY_BYTES == 1500


def test_shipped_traces_parse() -> None:
    from tests.conftest import ROOT

    shipped = sorted((ROOT / "topologies" / "traces").glob("*.trace"))
    assert len(shipped) >= 3
    for p in shipped:
        assert load_trace(p).mean_mbps > 1
