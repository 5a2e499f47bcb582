"""The analytic model of frame latency under loss with NACK retransmission. Pure code.

A frame of k packets, each lost independently with probability p, completes when every packet
has arrived; a lost packet is re-requested and resent, one round trip per attempt (aiortc: the
NACK goes out when the next packet reveals the gap). With R = the most attempts any packet of
the frame needed, P(R <= r) = (1 - p^(r+1))^k, and

  latency = delay + frame_bits / rate + R x (gap + RTT)

where RTT = forward + reverse delay (+ one packet's serialization) and gap = the time until a
later packet reveals the loss (one packet time, or up to a frame interval when the frame's last
packet was lost: this dominates at low bitrates, with one packet per frame). The mean and any
quantile follow. Queueing is ignored: the model holds below the link rate (infinite at or above).
"""

from __future__ import annotations

import bisect
import itertools
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


def _packet_outcomes(
    link: LinkModelInput, bitrate_mbps: float, fps: float
) -> list[list[tuple[float, float]]]:
    """Per packet of a frame: (latency if it needs r repairs, probability), r = 0, 1, ...

    Packet i arrives i+1 packet times after the frame starts plus the delay. If lost, the gap is
    seen when the next packet arrives (the next frame's first, for the last packet), the NACK
    goes back and the retransmission comes forward; a lost retransmission waits (aiortc) for a
    new gap, about a frame interval, before the next round.
    """
    p = link.loss_pct / 100
    k = packets_per_frame(bitrate_mbps, fps)
    bits = frame_wire_bits(bitrate_mbps, fps)
    packet_ms = bits / k / (link.rate_mbps * 1e6) * 1e3
    rtt = link.delay_ms + link.reverse_delay_ms + packet_ms
    frame_ms = 1000 / fps
    out = []
    for i in range(k):
        arrive = link.delay_ms + (i + 1) * packet_ms
        detect = packet_ms if i < k - 1 else max(packet_ms, frame_ms - (k - 1) * packet_ms)
        rounds = [(arrive, 1 - p)]
        for r in range(1, 30):
            prob = p**r * (1 - p)
            if prob < 1e-12:
                break
            rounds.append((arrive + detect + rtt + (r - 1) * (frame_ms + rtt), prob))
        out.append(rounds)
    return out


def latency_quantile_ms(link: LinkModelInput, bitrate_mbps: float, fps: float, q: float) -> float:
    """The q-quantile of frame latency (q in (0, 1)); inf at or above the link rate.

    A frame's latency is the latest of its packets'; packets are lost independently, so its
    distribution function is the product of theirs.
    """
    if bitrate_mbps >= link.rate_mbps:
        return math.inf
    packets = _packet_outcomes(link, bitrate_mbps, fps)
    cdfs = []
    for rounds in packets:
        times = [t for t, _ in rounds]
        cum = list(itertools.accumulate(pr for _, pr in rounds))
        cdfs.append((times, cum))
    for x in sorted({t for rounds in packets for t, _ in rounds}):
        prob = 1.0
        for times, cum in cdfs:
            j = bisect.bisect_right(times, x) - 1
            prob *= cum[j] if j >= 0 else 0.0
        if prob >= q - 1e-12:
            return x
    return max(t for rounds in packets for t, _ in rounds)


def latency_mean_ms(link: LinkModelInput, bitrate_mbps: float, fps: float) -> float:
    if bitrate_mbps >= link.rate_mbps:
        return math.inf
    packets = _packet_outcomes(link, bitrate_mbps, fps)
    points = sorted({t for rounds in packets for t, _ in rounds})
    mean, previous = points[0], points[0]
    for x in points[1:]:
        below = 1.0
        for rounds in packets:
            below *= sum(pr for t, pr in rounds if t <= previous)
        mean += (x - previous) * (1 - below)
        previous = x
    return mean


def p_frame_hit(loss_pct: float, bitrate_mbps: float, fps: float) -> float:
    """Probability that at least one packet of a frame is lost (the paper's argument)."""
    return 1 - (1 - loss_pct / 100) ** packets_per_frame(bitrate_mbps, fps)
