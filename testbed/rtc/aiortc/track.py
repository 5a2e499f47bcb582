"""A stack-neutral Source as an aiortc MediaStreamTrack: paced, recorded, told its target.

Encoded frames go out as av.Packets, which aiortc packetizes without its encoder (exactly
ceil(size / 1300) RTP packets each); pictures go to aiortc's VP8/H.264 encoder, whose target
this adapter sets (through compat) when a controller moves it.
"""

from __future__ import annotations

import time
from typing import Any

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from testbed.rtc.aiortc import compat
from testbed.rtc.sources import TIME_BASE, FrameRecord, Pacer, Source
from testbed.rtc.spec import StreamSpec


class SourceTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, source: Source, spec: StreamSpec) -> None:
        super().__init__()
        self.source = source
        self.pacer = Pacer(spec.fps, spec.duration_s, spec.pauses)
        self.frames: list[FrameRecord] = []
        self.sender: Any = None  # the RTCRtpSender, once there is one (its encoder's target)
        self.encoder_follows = not source.encoded and spec.abr != "fixed"
        self.fps = spec.fps
        self.max_fps: float | None = spec.send_fps
        self.scale_down: float | None = None
        self.size = (spec.width, spec.height)
        self.not_applied: dict[str, int] = {}  # decisions this source cannot honour: how often

    @property
    def finished(self) -> Any:
        return self.pacer.finished

    def set_target_bitrate(self, bps: float) -> None:
        self.source.set_target_bitrate(bps)
        if self.encoder_follows and self.sender is not None:
            compat.set_encoder_bitrate(self.sender, int(bps))

    def set_limits(self, max_fps: float | None, scale_down: float | None) -> None:
        """A controller's frame-rate limit and resolution divisor (testbed.abr.base.Decision)."""
        self.max_fps = max_fps
        if scale_down is not None and scale_down != 1 and self.source.encoded:
            self.not_applied["scale_down"] = self.not_applied.get("scale_down", 0) + 1
            scale_down = None  # encoded frames (synthetic, roi) cannot be rescaled here
        self.scale_down = scale_down

    def _due(self, index: int) -> bool:
        """Whether frame index goes out under max_fps: the first of each 1/max_fps slot."""
        if self.max_fps is None or self.max_fps >= self.fps or index == 0:
            return True
        share = self.max_fps / self.fps
        return int(index * share) != int((index - 1) * share)

    def request_keyframe(self) -> None:
        self.source.request_keyframe()

    async def recv(self) -> Any:
        while True:
            turn = await self.pacer.next()
            if turn is None:
                self.stop()
                raise MediaStreamError
            index, pts = turn
            if self._due(index):
                break
        capture = time.monotonic_ns()
        made = self.source.produce(index, capture)
        self.frames.append(
            (index, pts, capture, made.size_bytes, made.keyframe, self.source.target_bps)
        )
        out: Any = av.Packet(made.payload) if self.source.encoded else made.picture
        if self.scale_down and not self.source.encoded:
            w, h = (max(16, round(x / self.scale_down / 2) * 2) for x in self.size)
            out = out.reformat(width=w, height=h, format="yuv420p")
        out.pts, out.time_base = pts, TIME_BASE
        return out
