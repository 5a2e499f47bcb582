"""Frame sources for the sender. Each records, per frame, its pts and when it was captured.

synthetic: av.Packet frames of exact size, which aiortc packetizes without an encoder
(ceil(size / 1300) RTP packets each), so the bitrate on the wire is exactly the one asked for.
The first bytes carry the VP8 key-frame bit, a magic, the frame index and the capture time.
video: VideoFrames (a file through PyAV, or a built-in moving pattern) for aiortc's encoders.
"""

from __future__ import annotations

import asyncio
import struct
import time
from fractions import Fraction
from typing import Any

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from testbed.rtc.spec import StreamSpec

VIDEO_CLOCK = 90_000
TIME_BASE = Fraction(1, VIDEO_CLOCK)
FRAME_HEADER = struct.Struct("!B2sIq")  # vp8 P bit, b"TB", frame index, capture_ns
MAGIC = b"TB"

# index, pts, capture_ns, size_bytes, keyframe, target_bps (the bitrate asked for at capture)
FrameRecord = tuple[int, int, int, int, bool, float]
MIN_FRAME_BYTES = 16


def frame_sizes(spec: StreamSpec, bitrate_bps: float | None = None) -> tuple[int, int]:
    """(delta size, key size) in bytes: key frames `ratio` times larger, mean = bitrate/fps."""
    bps = spec.bitrate_mbps * 1e6 if bitrate_bps is None else bitrate_bps
    mean = max(MIN_FRAME_BYTES, bps / 8 / spec.fps)
    if not spec.keyframe_period_s:
        return round(mean), round(mean)
    period = max(1, round(spec.keyframe_period_s * spec.fps))
    delta = period * mean / (spec.keyframe_ratio + period - 1)
    return round(delta), round(delta * spec.keyframe_ratio)


def decode_frame_header(data: bytes) -> tuple[int, int] | None:
    """(frame index, capture_ns) from a synthetic frame's first bytes, or None."""
    if len(data) < FRAME_HEADER.size:
        return None
    _, magic, index, capture = FRAME_HEADER.unpack_from(data)
    return (index, capture) if magic == MAGIC else None


class PacedTrack(MediaStreamTrack):
    """Emits frame k at start + k / fps (monotonic) until duration_s; then ends."""

    kind = "video"

    def __init__(self, spec: StreamSpec) -> None:
        super().__init__()
        self.spec = spec
        self.frames: list[FrameRecord] = []
        self.count = round(spec.duration_s * spec.fps)
        self.index = 0
        self.start_ns: int | None = None
        self.finished = asyncio.Event()
        self.target_bps = spec.bitrate_mbps * 1e6  # an ABR controller moves it
        self.key_period = (
            max(1, round(spec.keyframe_period_s * spec.fps)) if spec.keyframe_period_s else 0
        )

    async def _wait_turn(self) -> tuple[int, int]:
        if self.index >= self.count:
            self.finished.set()
            self.stop()
            raise MediaStreamError
        if self.start_ns is None:
            self.start_ns = time.monotonic_ns()
        due = self.start_ns + int(self.index * 1e9 / self.spec.fps)
        wait = due - time.monotonic_ns()
        if wait > 0:
            await asyncio.sleep(wait / 1e9)
        index = self.index
        self.index += 1
        pts = round(index * VIDEO_CLOCK / self.spec.fps)
        return index, pts


class SyntheticTrack(PacedTrack):
    async def recv(self) -> Any:
        index, pts = await self._wait_turn()
        delta, key = frame_sizes(self.spec, self.target_bps)
        keyframe = index == 0 or (self.key_period > 0 and index % self.key_period == 0)
        size = key if keyframe else delta
        capture = time.monotonic_ns()
        head = FRAME_HEADER.pack(0 if keyframe else 1, MAGIC, index, capture)
        packet = av.Packet(head + bytes(max(0, size - len(head))))
        packet.pts = pts
        packet.time_base = TIME_BASE
        self.frames.append((index, pts, capture, size, keyframe, self.target_bps))
        return packet


class PatternTrack(PacedTrack):
    """A moving test pattern (bars and a square), or frames of a video file, looped."""

    def __init__(self, spec: StreamSpec) -> None:
        super().__init__(spec)
        self.container = av.open(spec.video) if spec.video else None
        self.decoded: Any = None

    def _next_image(self, index: int) -> Any:
        spec = self.spec
        if self.container is not None:
            for _ in range(2):
                if self.decoded is None:
                    self.decoded = self.container.decode(video=0)
                try:
                    frame = next(self.decoded)
                    return frame.reformat(width=spec.width, height=spec.height, format="yuv420p")
                except StopIteration:
                    self.container.seek(0)
                    self.decoded = None
        w, h = spec.width, spec.height
        x = np.arange(w, dtype=np.uint16)
        img = np.empty((h, w, 3), dtype=np.uint8)
        img[:, :, 0] = ((x + index * 4) % 256).astype(np.uint8)
        img[:, :, 1] = ((x // 2 + index * 2) % 256).astype(np.uint8)
        img[:, :, 2] = 128
        s = max(16, h // 6)
        cx = (index * 7) % max(1, w - s)
        cy = (index * 3) % max(1, h - s)
        img[cy : cy + s, cx : cx + s] = 255
        return av.VideoFrame.from_ndarray(img, format="rgb24")

    async def recv(self) -> Any:
        index, pts = await self._wait_turn()
        frame = self._next_image(index)
        frame.pts = pts
        frame.time_base = TIME_BASE
        self.frames.append((index, pts, time.monotonic_ns(), 0, False, self.target_bps))
        return frame


def make_track(spec: StreamSpec) -> PacedTrack:
    if spec.source == "roi":
        from testbed.roi.track import RoiTrack

        return RoiTrack(spec)
    return SyntheticTrack(spec) if spec.source == "synthetic" else PatternTrack(spec)
