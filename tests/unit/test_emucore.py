"""The compiled link model gives the pure model's verdicts, packet for packet (pure: no kernel).

The pure LinkModel is the reference; the compiled one (testbed/shaping/_emucore.c) must agree on
every event and every nanosecond, for every kind of link without a schedule, on arrivals that
include bursts (queue drops), idle gaps (the trace's unused opportunities) and equal times.
"""

from __future__ import annotations

import random
from dataclasses import astuple
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.config import GilbertElliottSpec, LinkSpec, parse_link_spec
from testbed.config.queues import QueueSpec, parse_queue
from testbed.config.traces import Trace
from testbed.shaping import emucore
from testbed.shaping.model import LinkModel
from testbed.shaping.queue_link import QueueLinkModel

pytestmark = pytest.mark.skipif(not emucore.available(), reason=emucore.WHY_NOT)

TRACE = Trace("t.trace", (0, 1, 1, 3, 7, 7, 7, 12, 20))
START = 1_000_000_000_000  # a CLOCK_MONOTONIC-like start


def arrivals(rng: random.Random, n: int) -> list[tuple[int, int]]:
    t, out = START, []
    for _ in range(n):
        t += rng.choice((0, rng.randrange(1, 2_000), rng.randrange(1, 200_000), 30_000_000))
        out.append((t, rng.choice((60, 200, 1200, 1500, rng.randrange(20, 1501)))))
    return out


SPECS = {
    "rate+queue": LinkSpec(rate_mbps=10, delay_ms=30, queue_packets=20),
    "rate+bytes": LinkSpec(rate_mbps=3.3, delay_ms=5, queue_packets=None, queue_bytes=9_000),
    "bernoulli": LinkSpec(rate_mbps=50, delay_ms=1, loss_pct=7.5),
    "gilbert": LinkSpec(rate_mbps=20, gilbert_elliott=GilbertElliottSpec(5, 30, 90, 1)),
    "jitter": LinkSpec(rate_mbps=8, delay_ms=20, jitter_ms=4, loss_pct=2),
    "unlimited": LinkSpec(delay_ms=12.5, queue_packets=None),
    "deep queue": LinkSpec(rate_mbps=0.5, delay_ms=1, queue_packets=5000),  # its ring grows
    "trace": LinkSpec(trace="t.trace", delay_ms=10, queue_packets=4),
    "trace+jitter": LinkSpec(trace="t.trace", jitter_ms=1.5, loss_pct=1, queue_bytes=20_000),
    "rate+queue_ms": LinkSpec(rate_mbps=4, delay_ms=20, queue_packets=None, queue_ms=30),
    "trace+queue_ms": LinkSpec(trace="t.trace", delay_ms=5, queue_packets=None, queue_ms=3),
}


def verdicts(model: object, packets: list[tuple[int, int]]) -> list[tuple[str, int, int]]:
    out = []
    for t, size in packets:
        v = model.offer(t, size)  # type: ignore[attr-defined]
        out.append(
            (v[0], v[1], v[2]) if isinstance(v, tuple) else (v.event, v.link_exit_ns, v.release_ns)
        )
    return out


@pytest.mark.parametrize("name", sorted(SPECS))
def test_compiled_model_matches_the_reference(name: str) -> None:
    spec = SPECS[name]
    trace = TRACE if spec.trace else None
    packets = arrivals(random.Random(name), 20_000)
    ref = verdicts(LinkModel(spec, seed=7, start_ns=START, trace=trace), packets)
    got = verdicts(emucore.make_model(spec, 7, START, trace), packets)
    events = {e for e, _, _ in ref}
    assert got == ref, next(i for i, (a, b) in enumerate(zip(got, ref, strict=True)) if a != b)
    assert ("deliver" in events and len(events) >= 2) or name == "unlimited"


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**40),
    rate=st.one_of(st.none(), st.floats(0.1, 2_000)),
    delay=st.floats(0, 500),
    jitter=st.floats(0, 50),
    loss=st.floats(0, 100),
    queue=st.one_of(st.none(), st.integers(1, 50)),
)
def test_compiled_model_matches_on_any_link(
    seed: int, rate: float | None, delay: float, jitter: float, loss: float, queue: int | None
) -> None:
    spec = LinkSpec(
        rate_mbps=rate, delay_ms=delay, jitter_ms=jitter, loss_pct=loss, queue_packets=queue
    )
    packets = arrivals(random.Random(seed), 500)
    ref = verdicts(LinkModel(spec, seed=seed, start_ns=START), packets)
    assert verdicts(emucore.make_model(spec, seed, START, None), packets) == ref


def test_a_schedule_keeps_the_pure_model() -> None:
    raw = {"rate_mbps": 5, "schedule": {"segments": [{"duration_ms": 100, "delay_ms": 40}]}}
    spec = parse_link_spec(raw, "t.yaml", "links.l.uplink", Path("."))
    assert isinstance(emucore.make_model(spec, 1, START, None), LinkModel)


def queue(name: str, **params: float) -> QueueSpec:
    return parse_queue({"discipline": name, **params}, "test", "queue")


QUEUE_SPECS = {
    "drophead": LinkSpec(rate_mbps=5, delay_ms=10, queue=queue("drophead"), queue_packets=30),
    "codel": LinkSpec(rate_mbps=5, delay_ms=10, queue=queue("codel"), queue_packets=400),
    "codel+ecn+jitter": LinkSpec(rate_mbps=8, delay_ms=20, jitter_ms=3, loss_pct=1,
                                 queue=queue("codel", target_ms=2, interval_ms=40), ecn=True),
    "pie": LinkSpec(rate_mbps=5, delay_ms=10, queue=queue("pie"), queue_packets=None,
                    queue_ms=400),
    "pie+ecn": LinkSpec(rate_mbps=11, queue=queue("pie", max_burst_ms=20, tupdate_ms=5), ecn=True,
                        gilbert_elliott=GilbertElliottSpec(2, 30, 50, 0)),
    "fq_codel": LinkSpec(rate_mbps=5, delay_ms=10, queue=queue("fq_codel", flows=16),
                         queue_packets=200),
    "fq_codel+bytes+ecn": LinkSpec(rate_mbps=3, queue=queue("fq_codel", quantum_bytes=300),
                                   queue_packets=None, queue_bytes=60_000, ecn=True),
    "trace+codel": LinkSpec(trace="t.trace", delay_ms=5, queue=queue("codel"), queue_ms=50),
    "trace+fq_codel": LinkSpec(trace="t.trace", queue=queue("fq_codel"), queue_packets=50),
    "unlimited+codel": LinkSpec(delay_ms=3, queue=queue("codel"), queue_packets=None),
}  # fmt: skip


def queue_arrivals(rng: random.Random, n: int) -> list[tuple[int, int, int, bool]]:
    """Bursts and gaps of several flows, some ECN-capable; overloads every link above."""
    t, out = START, []
    for _ in range(n):
        idle = 200_000_000 if rng.random() < 0.003 else 0  # the link goes idle now and then
        t += idle + rng.choice((0, 0, rng.randrange(1, 300_000), rng.randrange(1, 2_000_000)))
        flow = rng.choice((0x1234, 0xBEEF00, rng.randrange(0, 2**32)))
        out.append((t, rng.choice((100, 1200, 1500, rng.randrange(40, 1501))), flow, flow % 3 == 0))
    return out


def outcomes(model: object, packets: list[tuple[int, int, int, bool]]) -> list[tuple[object, ...]]:
    out: list[tuple[object, ...]] = []
    for seq, (t, size, flow, ect) in enumerate(packets):
        if seq % 7 == 3:  # the loop also advances the model between arrivals
            out += [tuple(o) if isinstance(o, tuple) else astuple(o)
                    for o in model.advance(t - 1)]  # type: ignore[attr-defined]  # fmt: skip
        got = model.offer(t, seq, size, flow, ect)  # type: ignore[attr-defined]
        out += [tuple(o) if isinstance(o, tuple) else astuple(o) for o in got]
    end = model.advance(packets[-1][0] + 60_000_000_000)  # type: ignore[attr-defined]
    return out + [tuple(o) if isinstance(o, tuple) else astuple(o) for o in end]


@pytest.mark.parametrize("name", sorted(QUEUE_SPECS))
def test_compiled_queue_model_matches_the_reference(name: str) -> None:
    spec = QUEUE_SPECS[name]
    trace = TRACE if spec.trace else None
    packets = queue_arrivals(random.Random(name), 20_000)
    reference = QueueLinkModel(spec, seed=7, start_ns=START, trace=trace)
    compiled = emucore.make_queue_model(spec, 7, START, trace)
    ref = outcomes(reference, packets)
    got = outcomes(compiled, packets)
    assert len(ref) == len(packets)
    first = next((i for i, (a, b) in enumerate(zip(got, ref, strict=False)) if a != b), None)
    assert got == ref, (first, got[first] if first is not None else None,
                        ref[first] if first is not None else None)  # fmt: skip
    events = {o[1] for o in ref}
    assert "deliver" in events and (len(events) >= 2 or spec.rate_mbps is None), events
    if spec.ecn:
        assert any(o[5] for o in ref), "no packet marked"
