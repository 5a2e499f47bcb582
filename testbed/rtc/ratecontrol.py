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
        controller = make_controller(spec.abr, spec.abr_params, spec.bitrate_mbps * 1e6, spec.fps)
        self.driver = AbrDriver(controller, spec.bitrate_mbps * 1e6, min_bitrate_bps(spec),
                                name=spec.abr)  # fmt: skip
        self.tick_s = float(getattr(controller, "period_ms", PERIOD_MS)) / 1000
        rule = spec.stop_rule()
        self.stopper = Stopper(rule) if rule is not None else None  # stop_when: fed here
        self.estimates: list[tuple[int, float | None]] = []  # rtp ts, latency estimate ms
        self.floor_bps = min_bitrate_bps(spec)
        self.audio_bps = spec.audio_spec().bitrate_bps if spec.abr != "fixed" else 0.0

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
        self.sink.set_target_bitrate(self.video_bps(target_bps))
        self.sink.set_limits(self.driver.max_fps or self.spec.send_fps, self.driver.scale_down)

    def video_bps(self, target_bps: float) -> float:
        """What the video is asked for: the budget less the audio's share, at least the floor."""
        return max(target_bps - self.audio_bps, self.floor_bps)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.tick_s)
            self.apply(self.driver.feed(Feedback(time.monotonic_ns() / 1e6, "tick")))

    def summary(self) -> dict[str, Any]:
        return controller_summary(self.spec, self.driver)

    def controller_rows(self) -> list[tuple[Any, ...]]:
        """The sender record's controller table (testbed.rtc.record)."""
        return [(round(t_ms * 1e6), kind, bps, self.video_bps(bps), None, *carried, None, None)
                for t_ms, kind, bps, *carried in self.driver.events]  # fmt: skip


def controller_summary(spec: StreamSpec, driver: AbrDriver) -> dict[str, Any]:
    """cell.json's `abr`: the controller, its parameters, its errors in words, its last target."""
    return {"controller": spec.abr, "params": spec.abr_params, "errors": driver.errors,
            "first_error": driver.first_error, "final_target_bps": driver.target_bps}  # fmt: skip
