"""The pure link model: no sockets, no clocks; times are injected."""

from __future__ import annotations

import itertools

import pytest

from testbed.config import GilbertElliottSpec, LinkSpec
from testbed.config.traces import parse_trace, piecewise_trace
from testbed.shaping.model import DELIVER, DROP_LOSS, DROP_QUEUE, LinkModel

MS = 1_000_000


def test_rate_and_delay() -> None:
    m = LinkModel(LinkSpec(rate_mbps=10, delay_ms=30), seed=1)
    v = m.offer(0, 1250)  # 1250 B at 10 Mbps = 1 ms
    assert v.event == DELIVER and v.link_exit_ns == 1 * MS and v.release_ns == 31 * MS
    v2 = m.offer(0, 1250)  # queued behind the first
    assert v2.link_exit_ns == 2 * MS and v2.release_ns == 32 * MS
    v3 = m.offer(10 * MS, 1250)  # link idle again
    assert v3.link_exit_ns == 11 * MS


def test_droptail_queue_in_packets_and_bytes() -> None:
    m = LinkModel(LinkSpec(rate_mbps=1, queue_packets=3), seed=1)
    events = [m.offer(0, 1000).event for _ in range(5)]
    assert events == [DELIVER] * 3 + [DROP_QUEUE] * 2
    m2 = LinkModel(LinkSpec(rate_mbps=1, queue_packets=None, queue_bytes=2500), seed=1)
    assert [m2.offer(0, 1000).event for _ in range(3)] == [DELIVER, DELIVER, DROP_QUEUE]
    # after the first packet has left (8 ms at 1 Mbps), there is room again
    assert m2.offer(8 * MS, 1000).event == DELIVER


def test_bernoulli_loss_rate_and_determinism() -> None:
    spec = LinkSpec(loss_pct=5)
    a = [LinkModel(spec, seed=3).offer(i, 100).event for i in range(1)]
    m1, m2 = LinkModel(spec, seed=3), LinkModel(spec, seed=3)
    e1 = [m1.offer(i * MS, 100).event for i in range(20000)]
    e2 = [m2.offer(i * MS, 100).event for i in range(20000)]
    assert e1 == e2 and a
    lost = e1.count(DROP_LOSS) / len(e1)
    assert 0.045 < lost < 0.055


def test_gilbert_elliott_mean_and_burstiness() -> None:
    ge = GilbertElliottSpec(p_pct=1, r_pct=20)
    m = LinkModel(LinkSpec(gilbert_elliott=ge), seed=5)
    events = [m.offer(i * MS, 100).event == DROP_LOSS for i in range(200_000)]
    mean = sum(events) / len(events)
    assert mean == pytest.approx(ge.mean_loss_pct / 100, rel=0.1)
    bursts = sum(1 for a, b in itertools.pairwise(events) if a and not b)
    assert sum(events) / bursts == pytest.approx(1 / 0.2, rel=0.15)  # mean burst = 1/r


def test_jitter_never_reorders() -> None:
    m = LinkModel(LinkSpec(rate_mbps=100, delay_ms=20, jitter_ms=5), seed=2)
    releases = [m.offer(i * 100_000, 200).release_ns for i in range(2000)]
    assert releases == sorted(releases)
    assert max(r - i * 100_000 for i, r in enumerate(releases)) > 25 * MS


def test_trace_mahimahi_semantics() -> None:
    trace = parse_trace("1\n2\n10\n", "t")
    m = LinkModel(LinkSpec(trace="t", queue_packets=None), seed=1, start_ns=0, trace=trace)
    assert m.offer(0, 1500).link_exit_ns == 1 * MS  # one full opportunity
    assert m.offer(0, 1000).link_exit_ns == 2 * MS
    assert m.offer(0, 1000).link_exit_ns == 10 * MS  # 500 left at 2 ms, rest at 10 ms
    # an idle link wastes opportunities: at 15 ms the next one is 11 ms + ... = 11 (loop 2)
    assert m.offer(15 * MS, 100).link_exit_ns == 20 * MS


def test_trace_delivers_its_capacity_when_saturated() -> None:
    stamps = piecewise_trace([(1, 10), (1, 3)])
    trace = parse_trace("\n".join(map(str, stamps)), "t")
    m = LinkModel(LinkSpec(trace="t", queue_packets=None), seed=1, trace=trace)
    exits = [m.offer(0, 1400).link_exit_ns for _ in range(1500)]
    per_window: dict[int, int] = {}
    for e in exits:
        per_window[e // (100 * MS)] = per_window.get(e // (100 * MS), 0) + 1400
    for w in range(1, 19):
        assert per_window[w] == pytest.approx(
            trace.capacity_bytes(w * 100 * MS, (w + 1) * 100 * MS), abs=1500
        )
