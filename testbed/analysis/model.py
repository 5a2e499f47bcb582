"""The analytic model of frame latency under loss with NACK retransmission. Pure code.

A frame of k packets, each lost independently with probability p, completes when every packet
has arrived; a lost packet is re-requested and resent, one round trip per attempt (aiortc: the
NACK goes out when the next packet reveals the gap). With R = the most attempts any packet of
the frame needed, P(R <= r) = (1 - p^(r+1))^k, and

  latency = delay + frame_bits / rate + R x (RTT + gap)

where RTT = forward + reverse delay (+ one packet's serialization) and gap = the time until the
next packet reveals the loss (about one packet time). The mean and any quantile follow. Queueing
is ignored: the model holds below the link rate and says so above it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

PACKET_PAYLOAD = 1300  # aiortc's VP8 packetizer
PACKET_OVERHEAD = (
    68  # IP 20 + UDP 8 + RTP 12 + extensions ~12 + VP8 descriptor 4 + SRTP tag 10 (+2)
)


@dataclass(frozen=True)
class LinkModelInput:
    rate_mbps: float
    delay_ms: float
    reverse_delay_ms: float
    loss_pct: float


def packets_per_frame(bitrate_mbps: float, fps: float) -> int:
    return max(1, math.ceil(bitrate_mbps * 1e6 / 8 / fps / PACKET_PAYLOAD))


def frame_wire_bits(bitrate_mbps: float, fps: float) -> float:
    k = packets_per_frame(bitrate_mbps, fps)
    return (bitrate_mbps * 1e6 / fps) + k * PACKET_OVERHEAD * 8


def base_latency_ms(link: LinkModelInput, bitrate_mbps: float, fps: float) -> float:
    """Loss-free latency: propagation + serialization of the whole frame."""
    return link.delay_ms + frame_wire_bits(bitrate_mbps, fps) / (link.rate_mbps * 1e6) * 1e3


def retransmission_ms(link: LinkModelInput, bitrate_mbps: float, fps: float) -> float:
    packet_ms = (PACKET_PAYLOAD + PACKET_OVERHEAD) * 8 / (link.rate_mbps * 1e6) * 1e3
    return link.delay_ms + link.reverse_delay_ms + 2 * packet_ms


def latency_quantile_ms(link: LinkModelInput, bitrate_mbps: float, fps: float, q: float) -> float:
    """The q-quantile of frame latency (q in (0, 1)); inf at or above the link rate."""
    if bitrate_mbps >= link.rate_mbps:
        return math.inf
    p = link.loss_pct / 100
    k = packets_per_frame(bitrate_mbps, fps)
    r = 0
    while p > 0 and (1 - p ** (r + 1)) ** k < q and r < 50:
        r += 1
    return base_latency_ms(link, bitrate_mbps, fps) + r * retransmission_ms(link, bitrate_mbps, fps)


def latency_mean_ms(link: LinkModelInput, bitrate_mbps: float, fps: float) -> float:
    if bitrate_mbps >= link.rate_mbps:
        return math.inf
    p = link.loss_pct / 100
    k = packets_per_frame(bitrate_mbps, fps)
    expected_rounds = sum(1 - (1 - p ** (r + 1)) ** k for r in range(50))  # E[R] = sum P(R > r)
    return base_latency_ms(link, bitrate_mbps, fps) + expected_rounds * retransmission_ms(
        link, bitrate_mbps, fps
    )


def p_frame_hit(loss_pct: float, bitrate_mbps: float, fps: float) -> float:
    """Probability that at least one packet of a frame is lost (the paper's argument)."""
    return 1 - (1 - loss_pct / 100) ** packets_per_frame(bitrate_mbps, fps)
