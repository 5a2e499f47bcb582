"""Queue disciplines against their RFCs' pseudocode behaviour (pure: time injected, no kernel).

CoDel (RFC 8289): no drop before the sojourn has stayed above target for an interval, then
drops at interval/sqrt(count). PIE (RFC 8033): the probability update's scaled steps. FQ-CoDel
(RFC 8290): a sparse flow does not wait behind a bulk one. ECN: marks instead of drops.
"""

from __future__ import annotations

import itertools
import math
import random

import pytest

from testbed.config import LinkSpec
from testbed.config.queues import QueueSpec, parse_queue
from testbed.shaping.aqm import MTU_BYTES, Limits, Pie
from testbed.shaping.queue_link import Outcome, QueueLinkModel

MS = 1_000_000
START = 5_000 * MS


def queue(name: str, **params: float) -> QueueSpec:
    return parse_queue({"discipline": name, **params}, "test", "queue")


def run(spec: LinkSpec, arrivals: list[tuple[int, int, int, bool]], until: int) -> list[Outcome]:
    """Offer (time, size, flow, ect) in order, then let the link drain until `until`."""
    model = QueueLinkModel(spec, seed=1, start_ns=START)
    out: list[Outcome] = []
    for seq, (t, size, flow, ect) in enumerate(arrivals):
        out += model.offer(t, seq, size, flow, ect)
    out += model.advance(until)
    return out


def overload(rate_factor: float, seconds: float, flow: int = 1, ect: bool = False,
             link_mbps: float = 10) -> list[tuple[int, int, int, bool]]:  # fmt: skip
    """1500-byte packets at rate_factor times a link_mbps link."""
    gap = 1500 * 8 / (link_mbps * 1e6) / rate_factor * 1e9
    n = int(seconds * 1e9 / gap)
    return [(START + round(i * gap), 1500, flow, ect) for i in range(n)]


def test_every_packet_gets_exactly_one_fate() -> None:
    arrivals = overload(2.0, 3.0)
    for name in ("drophead", "codel", "pie", "fq_codel"):
        spec = LinkSpec(rate_mbps=10, delay_ms=20, queue=queue(name), queue_packets=200)
        out = run(spec, arrivals, START + 20_000 * MS)
        assert sorted(o.seq for o in out) == list(range(len(arrivals))), name
        delivered = [o for o in out if o.event == "deliver"]
        releases = [o.release_ns for o in delivered]
        assert releases == sorted(releases), name  # FIFO release order
        assert all(o.sojourn_ns >= 0 for o in delivered)


def test_codel_drops_only_after_an_interval_above_target_then_at_interval_over_sqrt_count() -> None:
    spec = LinkSpec(rate_mbps=10, queue=queue("codel"), queue_packets=None)
    arrivals = overload(1.5, 2.0)
    out = run(spec, arrivals, START + 60_000 * MS)
    by_seq = {o.seq: o for o in out}
    drops = sorted(arrivals[o.seq][0] + o.sojourn_ns for o in out if o.event == "drop_aqm")
    assert drops, "a 150% load must make CoDel drop"
    # the first packet whose sojourn reached the target, then an interval before any drop
    above = min(arrivals[s][0] + o.sojourn_ns for s, o in by_seq.items()
                if o.event == "deliver" and o.sojourn_ns >= 5 * MS)  # fmt: skip
    assert drops[0] - above >= 100 * MS - 2 * MS
    # in the dropping state, the k-th gap is interval/sqrt(k), to one packet time (1.2 ms)
    gaps = [b - a for a, b in itertools.pairwise(drops)][:6]
    assert len(gaps) == 6
    for k, gap in enumerate(gaps, start=1):
        assert abs(gap - 100 * MS / math.sqrt(k)) <= 1.3 * MS, (k, gap)


def test_codel_keeps_a_saturating_flows_sojourn_near_target_where_droptail_builds_a_queue() -> None:
    arrivals = overload(1.2, 8.0)
    codel = run(LinkSpec(rate_mbps=10, queue=queue("codel"), queue_packets=1000), arrivals,
                START + 60_000 * MS)  # fmt: skip
    tail = run(LinkSpec(rate_mbps=10, queue=queue("drophead"), queue_packets=1000), arrivals,
               START + 60_000 * MS)  # fmt: skip

    def p50_late(out: list[Outcome]) -> float:
        s = sorted(o.sojourn_ns for o in out if o.event == "deliver" and o.seq > len(arrivals) // 2)
        return s[len(s) // 2] / MS

    # an open-loop overload: CoDel cannot hold the target, but holds far below a full queue
    assert p50_late(codel) < 0.2 * p50_late(tail)
    assert p50_late(tail) > 500


def test_codel_with_ecn_marks_ect_packets_instead_of_dropping_them() -> None:
    spec = LinkSpec(rate_mbps=10, queue=queue("codel"), queue_packets=None, ecn=True)
    ect = run(spec, overload(1.5, 2.0, ect=True), START + 60_000 * MS)
    assert not [o for o in ect if o.event != "deliver"]
    assert sum(o.ce for o in ect) > 5
    plain = run(spec, overload(1.5, 2.0, ect=False), START + 60_000 * MS)
    assert any(o.event == "drop_aqm" for o in plain) and not any(o.ce for o in plain)


def test_pie_probability_update_follows_rfc8033_scaling() -> None:
    spec = queue("pie")
    pie = Pie(Limits(None, None, None), spec, ecn=False, rng=random.Random(1), start_ns=0)
    pie.qdelay = 30 * MS  # 15 ms above target, from an old delay of 0
    pie._calculate_probability()
    # drop_prob < 0.000001: p /= 2048 (RFC 8033 section 4.2)
    expected = (0.125 * 0.015 + 1.25 * 0.030) / 2048
    assert pie.prob == pytest.approx(expected, rel=1e-9)
    # above 10% the step is capped at 2%, and past 250 ms of delay another 2% is added
    pie.prob, pie.qdelay_old, pie.qdelay = 0.2, 0, 300 * MS
    pie._calculate_probability()
    assert pie.prob == pytest.approx(0.2 + 0.02 + 0.02)


def test_pie_drops_early_only_after_its_burst_allowance() -> None:
    spec = LinkSpec(rate_mbps=10, queue=queue("pie"), queue_packets=None)
    arrivals = overload(1.5, 4.0)
    out = run(spec, arrivals, START + 60_000 * MS)
    early = [arrivals[o.seq][0] - START for o in out if o.event == "drop_aqm"]
    assert early and min(early) >= 150 * MS  # max_burst: 150 ms


def test_fq_codel_isolates_a_sparse_flow_from_a_bulk_one() -> None:
    bulk = overload(1.3, 4.0, flow=11)
    sparse = [(START + i * 20 * MS + 7, 200, 22, False) for i in range(200)]
    arrivals = sorted(bulk + sparse)
    sojourns = {}
    for name in ("fq_codel", "drophead"):
        spec = LinkSpec(rate_mbps=10, queue=queue(name), queue_packets=1000)
        out = run(spec, arrivals, START + 60_000 * MS)
        s = sorted(o.sojourn_ns for o in out if o.event == "deliver" and arrivals[o.seq][2] == 22)
        sojourns[name] = s[int(0.95 * (len(s) - 1))] / MS
    assert sojourns["fq_codel"] < 1.3  # at most one bulk packet ahead (1.2 ms)
    assert sojourns["drophead"] > 100


def test_drophead_drops_the_oldest() -> None:
    spec = LinkSpec(rate_mbps=1, queue=queue("drophead"), queue_packets=3)
    arrivals = [(START + i, 1000, 0, False) for i in range(10)]
    out = run(spec, arrivals, START + 10_000 * MS)
    dropped = sorted(o.seq for o in out if o.event == "drop_queue")
    # the first goes straight to the link; the queue keeps the newest three
    assert dropped == [1, 2, 3, 4, 5, 6]


def test_queue_ms_bounds_the_wait_at_the_links_rate() -> None:
    spec = LinkSpec(rate_mbps=10, queue=queue("drophead"), queue_packets=None, queue_ms=50)
    out = run(spec, overload(2.0, 3.0), START + 60_000 * MS)
    worst = max(o.sojourn_ns for o in out if o.event == "deliver")
    assert 45 * MS < worst <= 50 * MS + 1.2 * MS
    assert MTU_BYTES == 1500


def test_a_trace_link_serves_the_queue_at_its_opportunities() -> None:
    from testbed.config.traces import Trace

    trace = Trace("t.trace", tuple(range(1, 101)))  # 1500 B per ms: 12 Mbps
    spec = LinkSpec(trace="t.trace", queue=queue("codel"), queue_packets=None)
    model = QueueLinkModel(spec, seed=1, start_ns=START, trace=trace)
    out: list[Outcome] = []
    for seq, (t, size, flow, ect) in enumerate(overload(1.5, 1.0, link_mbps=12)):
        out += model.offer(t, seq, size, flow, ect)
    out += model.advance(START + 10_000 * MS)
    exits = [o.link_exit_ns - START for o in out if o.event == "deliver"]
    assert all(e % MS == 0 for e in exits)  # every packet leaves at an opportunity
    assert len(set(exits)) == len(exits)  # one 1500-byte packet per opportunity


def test_a_scheduled_link_serves_the_queue_at_each_segments_rate() -> None:
    from pathlib import Path

    from testbed.config import parse_link_spec

    spec = parse_link_spec({"queue": "codel", "queue_ms": 200, "queue_packets": None,
                            "schedule": {"at_end": "hold", "segments": [
                                {"duration_ms": 1000, "rate_mbps": 10},
                                {"duration_ms": 500, "rate_mbps": 0},
                                {"duration_ms": 10_000, "rate_mbps": 2}]}},
                           "test", "uplink", Path("/"))  # fmt: skip
    arrivals = overload(0.5, 3.0)  # 5 Mbps: under 10, above 2
    out = run(spec, arrivals, START + 60_000 * MS)
    assert sorted(o.seq for o in out) == list(range(len(arrivals)))
    exits = [
        (arrivals[o.seq][0] - START, o.link_exit_ns - START) for o in out if o.event == "deliver"
    ]
    # nothing leaves during the outage (1.0-1.5 s); what waited through it leaves after
    assert not [e for _, e in exits if 1000 * MS < e < 1500 * MS]
    assert any(a < 1500 * MS < e for a, e in exits)
    # the 200 ms buffer at 2 Mbps holds 50 KB, not 250 KB: the third phase drops on arrival
    late = [o for o in out if arrivals[o.seq][0] - START > 2000 * MS]
    assert sum(o.event == "drop_queue" for o in late) > 0.3 * len(late)
