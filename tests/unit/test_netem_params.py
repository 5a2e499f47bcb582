from __future__ import annotations

import pytest

from testbed.config import GilbertElliottSpec, LinkSpec
from testbed.config.queues import parse_queue
from testbed.errors import UnavailableError
from testbed.shaping.netem_params import netem_params


def test_units_are_microseconds_and_bits() -> None:
    p = netem_params(LinkSpec(rate_mbps=10, delay_ms=30, jitter_ms=0.5, loss_pct=2))
    assert (p.delay_us, p.jitter_us, p.rate_bps, p.packet_overhead) == (
        30_000,
        500,
        10_000_000,
        -14,
    )
    kw = p.pyroute2_kwargs()
    assert kw["delay"] == 30_000 and kw["loss"] == 2 and kw["rate"] == "10000000bit"
    assert p.tc_args()[:5] == ["delay", "30000us", "500us", "distribution", "normal"]
    assert "random" in p.tc_args()


def test_limit_holds_the_queue_and_what_is_in_flight() -> None:
    p = netem_params(LinkSpec(rate_mbps=10, delay_ms=30, queue_packets=100))
    # 10 Mbps x 30 ms = 37.5 kB in flight: at least 375 packets of 100 B on top of the queue
    assert p.limit_packets == 100 + 375


def test_gilbert_elliott_maps_to_gemodel_via_tc() -> None:
    ge = GilbertElliottSpec(p_pct=1, r_pct=20, loss_bad_pct=90, loss_good_pct=0.5)
    p = netem_params(LinkSpec(gilbert_elliott=ge))
    assert p.tc_args()[2:7] == ["loss", "gemodel", "1%", "20%", "90%"]
    assert p.tc_args()[7] == "0.5%"
    with pytest.raises(ValueError, match="gemodel"):
        p.pyroute2_kwargs()


@pytest.mark.parametrize(
    "spec",
    [
        LinkSpec(trace="/x.trace"),
        LinkSpec(queue_bytes=30000),
        LinkSpec(rate_mbps=10, queue=parse_queue("codel", "t", "queue")),
        LinkSpec(rate_mbps=10, queue_ms=300),
    ],
)
def test_what_netem_cannot_do_is_refused(spec: LinkSpec) -> None:
    with pytest.raises(UnavailableError, match="--backend emu"):
        netem_params(spec)
