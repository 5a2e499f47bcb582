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

    @property
    def finished(self) -> Any:
        return self.pacer.finished

    def set_target_bitrate(self, bps: float) -> None:
        self.source.set_target_bitrate(bps)
        if self.encoder_follows and self.sender is not None:
            compat.set_encoder_bitrate(self.sender, int(bps))

    def request_keyframe(self) -> None:
        self.source.request_keyframe()

    async def recv(self) -> Any:
        turn = await self.pacer.next()
        if turn is None:
            self.stop()
            raise MediaStreamError
        index, pts = turn
        capture = time.monotonic_ns()
        made = self.source.produce(index, capture)
        self.frames.append(
            (index, pts, capture, made.size_bytes, made.keyframe, self.source.target_bps)
        )
        out = av.Packet(made.payload) if self.source.encoded else made.picture
        out.pts, out.time_base = pts, TIME_BASE
        return out
