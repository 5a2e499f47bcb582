"""Rate control in a sender, stack-neutral: feedback -> controller (safely) -> the source.

Every feedback event the stack turns into a testbed.abr.base.Feedback goes to the controller
through the AbrDriver; its target goes to one place, the sink's set_target_bitrate (a source,
or a stack's adapter that also tells its encoder). A 200 ms tick runs meanwhile. With audio
on, the target is the session's budget and the video gets what the audio leaves (libwebrtc's
allocator also serves the audio first); a fixed bitrate stays the video's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

from testbed.abr.base import PERIOD_MS, Feedback
from testbed.abr.driver import AbrDriver
from testbed.abr.framefeedback import latency_estimate_ms
from testbed.abr.registry import make as make_controller
from testbed.rtc.loops import BackgroundLoop
from testbed.rtc.sources import min_bitrate_bps
from testbed.rtc.spec import StreamSpec
from testbed.rtc.stopping import Stopper


class BitrateSink(Protocol):
    def set_target_bitrate(self, bps: float) -> None: ...

    def set_limits(self, max_fps: float | None, scale_down: float | None) -> None: ...


class RateControl(BackgroundLoop):
    def __init__(
        self,
        spec: StreamSpec,
        sink: BitrateSink,
        on_report: Callable[[Feedback], None] | None = None,
    ) -> None:
        self.spec, self.sink, self.on_report = spec, sink, on_report
        self.steering = Steering(spec)
        self.driver = self.steering.driver
        rule = spec.stop_rule()
        self.stopper = Stopper(rule) if rule is not None else None  # stop_when: fed here
        self.estimates: list[tuple[int, float | None]] = []  # rtp ts, latency estimate ms

    def on_frame_report(
        self,
        entries: list[tuple[int, int, int]],
        now_ns: int,
        rtt_ms: float | None,
        first_sent: Mapping[int, int],
    ) -> None:
        """Frames the receiver completed: one `frame` event each, latency estimated here."""
        for ts, assembly_us, age_us in entries:
            latency = latency_estimate_ms(now_ns, age_us, rtt_ms, first_sent.get(ts))
            self.estimates.append((ts, latency))
            if self.stopper is not None and latency is not None:
                self.stopper.add(latency)
                self.stopper.rtt_ms = rtt_ms
            event = Feedback(now_ns / 1e6, "frame", rtt_ms=rtt_ms, frame_rtp_ts=ts,
                             frame_assembly_ms=assembly_us / 1000, frame_latency_ms=latency)  # fmt: skip
            self.apply(self.driver.feed(event))

    def on_feedback(self, event: Feedback) -> None:
        if event.kind == "report" and self.on_report is not None:
            self.on_report(event)
        if self.stopper is not None and (event.kind == "nack" or (event.loss_fraction or 0) > 0):
            self.stopper.loss_heard = True
        self.apply(self.driver.feed(event))

    def apply(self, target_bps: float) -> None:
        self.sink.set_target_bitrate(self.steering.video_bps(target_bps))
        self.sink.set_limits(*self.steering.limits())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.steering.period_s)
            self.apply(self.driver.feed(Feedback(time.monotonic_ns() / 1e6, "tick")))

    def summary(self) -> dict[str, Any]:
        return self.steering.summary()

    def controller_rows(self) -> list[tuple[Any, ...]]:
        """The sender record's controller table (testbed.rtc.record)."""
        video = self.steering.video_bps
        return [(round(t_ms * 1e6), kind, bps, video(bps), None, *carried, None, None)
                for t_ms, kind, bps, *carried in self.driver.events]  # fmt: skip


class Steering:
    """What every stack's rate control shares: the controller behind its driver and the period
    it asks for, and what a target asks of the video (the budget less the audio's share, at
    least the source's floor; the frame-rate and resolution limits in force)."""

    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        controller = make_controller(spec.abr, spec.abr_params, spec.bitrate_mbps * 1e6, spec.fps)
        self.floor_bps = min_bitrate_bps(spec)
        self.driver = AbrDriver(controller, spec.bitrate_mbps * 1e6, self.floor_bps, name=spec.abr)
        self.period_s = float(getattr(controller, "period_ms", PERIOD_MS)) / 1000
        self.audio_bps = spec.audio_spec().bitrate_bps if spec.abr != "fixed" else 0.0

    def video_bps(self, target_bps: float) -> float:
        return max(target_bps - self.audio_bps, self.floor_bps)

    def limits(self) -> tuple[float | None, float | None]:
        """(max_fps, scale_down): the controller's, else the stream's send_fps."""
        return self.driver.max_fps or self.spec.send_fps, self.driver.scale_down

    def summary(self) -> dict[str, Any]:
        """cell.json's `abr`: the controller, its parameters, its errors in words, its last target."""
        d = self.driver
        return {"controller": self.spec.abr, "params": self.spec.abr_params, "errors": d.errors,
                "first_error": d.first_error, "final_target_bps": d.target_bps}  # fmt: skip
