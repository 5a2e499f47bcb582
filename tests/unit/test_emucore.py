"""The compiled link model gives the pure model's verdicts, packet for packet (pure: no kernel).

The pure LinkModel is the reference; the compiled one (testbed/shaping/_emucore.c) must agree on
every event and every nanosecond, for every kind of link without a schedule, on arrivals that
include bursts (queue drops), idle gaps (the trace's unused opportunities) and equal times.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from testbed.config import GilbertElliottSpec, LinkSpec, parse_link_spec
from testbed.config.traces import Trace
from testbed.shaping import emucore
from testbed.shaping.model import LinkModel

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
