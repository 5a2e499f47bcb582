"""A registry controller (testbed.abr) on libwebrtc: Python decides, the browser applies.

Every period_ms (the controller's, 200 by default) the sender reads the page's getStats figures
(`tb.feedback()`), turns what is new into the same Feedback events aiortc's taps give (pure:
StatsFeedback), feeds the controller through the AbrDriver, and when the video's share of the
target moves sets the encoding's maxBitrate (`tb.setTarget`), recording the value the sender
reads back. libwebrtc's GCC keeps running below that ceiling: a controller caps it, it cannot
push the encoder above GCC's own estimate.

  report  a new receiver report (remote-inbound-rtp's timestamp moved): fractionLost,
          packetsLost, packetsSent, roundTripTime; age = now - when the report arrived
  remb    availableOutgoingBitrate (GCC's estimate) when getStats has one; age from its entry
  nack    NACK packets received since the last poll (nackCount counts packets, not entries)
  tick    every poll, with the encoder's figures (libwebrtc's target, frames encoded / sent /
          dropped, PLIs received)
No `frame` events: per-frame feedback needs the receiver's per-frame reports, which only the
aiortc receiver sends.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from testbed.abr.base import Feedback
from testbed.rtc.ratecontrol import Steering
from testbed.rtc.spec import StreamSpec


@dataclass
class StatsFeedback:
    """getStats snapshots -> Feedback events (what changed since the previous one)."""

    last_report_t: float | None = None
    last_nacks: int = 0

    def events(self, snap: dict[str, Any], now_ms: float) -> list[Feedback]:
        t = float(snap["t"])
        out: list[Feedback] = []
        sent = snap.get("sent") or {}
        remote = snap.get("remote") or {}
        pair = snap.get("pair") or {}
        if remote.get("t") is not None and remote["t"] != self.last_report_t:
            self.last_report_t = remote["t"]
            rtt = remote.get("rtt")
            out.append(Feedback(now_ms, "report", loss_fraction=remote.get("fractionLost"),
                                packets_lost=remote.get("packetsLost"),
                                packets_sent=sent.get("packets"),
                                rtt_ms=None if rtt is None else rtt * 1000,
                                age_ms=max(0.0, t - remote["t"])))  # fmt: skip
        if pair.get("available"):
            rtt = pair.get("rtt")
            out.append(Feedback(now_ms, "remb", remb_bps=float(pair["available"]),
                                rtt_ms=None if rtt is None else rtt * 1000,
                                age_ms=max(0.0, t - float(pair.get("t") or t))))  # fmt: skip
        nacks = int(sent.get("nacks") or 0)
        if nacks > self.last_nacks:
            out.append(Feedback(now_ms, "nack", nack_packets=nacks - self.last_nacks,
                                age_ms=max(0.0, t - float(sent.get("t") or t))))  # fmt: skip
        self.last_nacks = max(self.last_nacks, nacks)
        encoded, captured = sent.get("encoded"), snap.get("captured")
        dropped = captured - encoded if captured is not None and encoded is not None else None
        out.append(Feedback(now_ms, "tick", stack_target_bps=sent.get("target"),
                            frames_encoded=encoded, frames_sent=sent.get("framesSent"),
                            frames_dropped=None if dropped is None else max(0, dropped),
                            plis=sent.get("plis"), age_ms=max(0.0, t - float(sent.get("t") or t))))  # fmt: skip
        return out


@dataclass
class BrowserControl:
    """The loop: poll, decide, apply, record (the sender record's controller table)."""

    spec: StreamSpec
    js: Callable[[str], Awaitable[Any]]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    applied: tuple[float, float | None, float | None] | None = None
    answer: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.steering = Steering(self.spec)
        self.driver = self.steering.driver
        self.stats = StatsFeedback()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            snap = await self.js("tb.feedback()")
            now_ms = time.monotonic_ns() / 1e6
            for event in self.stats.events(snap, now_ms):
                target = self.driver.feed(event)
                d = self.driver
                wanted = (self.steering.video_bps(target), *self.steering.limits())
                if wanted != self.applied:
                    args = ", ".join("null" if v is None else f"{v:g}" for v in wanted)
                    self.answer = await self.js(f"tb.setTarget({args})")
                    self.applied = wanted
                a = self.answer
                row = (round(now_ms * 1e6), event.kind, target, wanted[0], a.get("maxBitrate"),
                       event.remb_bps, event.rtt_ms, event.loss_fraction, event.age_ms, d.max_fps,
                       d.scale_down, a.get("maxFramerate"), a.get("scaleResolutionDownBy"))  # fmt: skip
                if event.kind != "tick" or not self.rows or self.rows[-1][2:4] != row[2:4]:
                    self.rows.append(row)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.steering.period_s)

    def summary(self) -> dict[str, Any]:
        return self.steering.summary()
