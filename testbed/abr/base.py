"""What a controller sees and what it must do.

A controller is constructed as Controller(initial_bps=..., fps=..., **params) and called with
every feedback event the sender gets, in order, with the time (ms, monotonic). It returns the
target bitrate in bits per second, or a Decision that also limits the frame rate and the
resolution. No sockets, no clocks: a unit test drives it with a list.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

KINDS = ("report", "remb", "nack", "frame", "tick")
PERIOD_MS = 200.0  # the tick, unless a controller's period_ms says otherwise


@dataclass(frozen=True)
class Feedback:
    """One event. kind: report (RTCP receiver report), remb, nack, frame, tick (every 200 ms).

    report: loss_fraction (since the previous report, 0..1), packets_lost (cumulative, as the
    receiver counts them: RTX and FEC-rebuilt packets do not count as received), packets_sent
    (cumulative media packets at that moment), rtt_ms (aiortc's smoothed estimate, None until
    known). remb: remb_bps, the stack's bandwidth estimate (aiortc: the receiver's REMB;
    Chromium: GCC's availableOutgoingBitrate from getStats). nack: nack_packets (entries in the NACK).
    frame: a frame the receiver completed (testbed.abr.framefeedback; sent only when the
    controller is not `fixed`): frame_rtp_ts, frame_assembly_ms (first packet to complete, on
    the receiver), frame_latency_ms (the sender's estimate, assuming RTT/2 each way; None until
    an RTT is known). age_ms: how old the figure was when the controller got it (Chromium:
    now - the getStats entry's timestamp, e.g. when the receiver report arrived; aiortc: 0,
    events are handed over as they arrive).

    tick: on Chromium also what getStats says of the encoder: stack_target_bps (libwebrtc's own
    target for the video), frames_encoded, frames_sent, frames_dropped (captured - encoded),
    plis (cumulative PLIs received); None on aiortc, whose encoder is the testbed's to read.

    A controller may say how often it wants a `tick` (and, on Chromium, fresh getStats
    figures): a class attribute period_ms (default 200).
    """

    now_ms: float
    kind: str
    loss_fraction: float | None = None
    packets_lost: int | None = None
    packets_sent: int | None = None
    rtt_ms: float | None = None
    remb_bps: float | None = None
    nack_packets: int = 0
    frame_rtp_ts: int | None = None
    frame_assembly_ms: float | None = None
    frame_latency_ms: float | None = None
    age_ms: float = 0.0
    stack_target_bps: float | None = None
    frames_encoded: int | None = None
    frames_sent: int | None = None
    frames_dropped: int | None = None
    plis: int | None = None


@dataclass(frozen=True)
class Decision:
    """What a controller may decide besides the bitrate: max_fps, the most frames per second
    to send (None: every frame the source makes); scale_down, the resolution divided by it
    (>= 1; None: full). Chromium applies them with setParameters (maxFramerate,
    scaleResolutionDownBy); aiortc sends only the frames due at max_fps and scales pictures
    before its encoder (a source that makes encoded frames, synthetic or roi, cannot be
    scaled: counted as not applied)."""

    bitrate_bps: float
    max_fps: float | None = None
    scale_down: float | None = None


class Controller(Protocol):
    def update(self, feedback: Feedback) -> float | Decision:
        """The target bitrate (bps) from now on, or a Decision."""
        ...
