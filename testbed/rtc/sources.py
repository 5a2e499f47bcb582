"""Frame sources, stack-neutral. A stack paces them (Pacer) and sends what they produce.

A Source makes frame k when asked and takes a new target bitrate through one method,
set_target_bitrate (an ABR controller's target arrives there, whatever the stack). Two kinds:
- encoded sources make the bytes of a frame, sent as they are (no encoder in the stack):
  synthetic (exactly bitrate/fps bytes; the first bytes carry the VP8 key-frame bit, a magic,
  the frame index and the capture time) and roi (testbed.roi.source: context-aware H.264);
- picture sources make pictures for the stack's own encoder: video (a file through PyAV, or a
  built-in moving pattern); the stack applies the target to its encoder.
"""

from __future__ import annotations

import asyncio
import struct
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Protocol

import av
import numpy as np

from testbed.roi.scene import BUILTINS
from testbed.rtc.spec import MIN_FRAME_BYTES, StreamSpec

VIDEO_CLOCK = 90_000
TIME_BASE = Fraction(1, VIDEO_CLOCK)
FRAME_HEADER = struct.Struct("!B2sIq")  # vp8 P bit, b"TB", frame index, capture_ns
MAGIC = b"TB"
VIDEO_MIN_BPS, VIDEO_MAX_BPS = 50_000, 1_000_000_000

# index, pts, capture_ns, size_bytes, keyframe, target_bps (the bitrate asked for at capture)
FrameRecord = tuple[int, int, int, int, bool, float]


@dataclass(frozen=True)
class Produced:
    """One frame: `payload` (encoded sources) or `picture` (an av.VideoFrame to encode)."""

    keyframe: bool
    size_bytes: int
    payload: bytes | None = None
    picture: Any = None


class Made(Protocol):
    """What a source's produce() returns (Produced, or any object with these fields)."""

    @property
    def keyframe(self) -> bool: ...
    @property
    def size_bytes(self) -> int: ...
    @property
    def payload(self) -> bytes | None: ...
    @property
    def picture(self) -> Any: ...


class Source(Protocol):
    encoded: bool  # True: produce() gives wire-ready payloads; False: pictures to encode
    target_bps: float

    def produce(self, index: int, capture_ns: int) -> Made: ...

    def set_target_bitrate(self, bps: float) -> None:
        """From now on, aim for bps (encoded sources make exactly it, where they can)."""
        ...

    def request_keyframe(self) -> None:
        """The receiver cannot decode (PLI/FIR): make the next frame a key frame."""
        ...

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        """Source-specific rows for the endpoint record (testbed.rtc.record), e.g. roi_frames."""
        ...


def min_bitrate_bps(spec: StreamSpec) -> float:
    """The lowest bitrate the source can make: 16-byte synthetic frames, or 50 kbps of video."""
    return MIN_FRAME_BYTES * 8 * spec.fps if spec.source == "synthetic" else VIDEO_MIN_BPS


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


class Pacer:
    """Frame k is due at start + k / fps (monotonic), for duration_s; then `finished` is set.
    A frame due inside a pause ([from_s, to_s) after the start) is never made."""

    def __init__(self, fps: float, duration_s: float,
                 pauses: tuple[tuple[float, float], ...] = ()) -> None:  # fmt: skip
        self.fps = fps
        self.count = round(duration_s * fps)
        self.pauses = pauses
        self.index = 0
        self.start_ns: int | None = None
        self.finished = asyncio.Event()

    async def next(self) -> tuple[int, int] | None:
        """(index, pts in 90 kHz) once the frame is due; None when the stream is over."""
        while any(a <= self.index / self.fps < b for a, b in self.pauses):
            self.index += 1
        if self.index >= self.count:
            self.finished.set()
            return None
        if self.start_ns is None:
            self.start_ns = time.monotonic_ns()
        due = self.start_ns + int(self.index * 1e9 / self.fps)
        wait = due - time.monotonic_ns()
        if wait > 0:
            await asyncio.sleep(wait / 1e9)
        index = self.index
        self.index += 1
        return index, round(index * VIDEO_CLOCK / self.fps)


class SyntheticSource:
    encoded = True

    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        self.target_bps = spec.bitrate_mbps * 1e6
        self.key_period = (
            max(1, round(spec.keyframe_period_s * spec.fps)) if spec.keyframe_period_s else 0
        )

    def produce(self, index: int, capture_ns: int) -> Produced:
        delta, key = frame_sizes(self.spec, self.target_bps)
        keyframe = index == 0 or (self.key_period > 0 and index % self.key_period == 0)
        size = key if keyframe else delta
        head = FRAME_HEADER.pack(0 if keyframe else 1, MAGIC, index, capture_ns)
        return Produced(keyframe, size, payload=head + bytes(max(0, size - len(head))))

    def set_target_bitrate(self, bps: float) -> None:
        self.target_bps = bps

    def request_keyframe(self) -> None:
        """Synthetic frames need no decoder: nothing to do."""

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        return {}


class PatternSource:
    """A moving test pattern (bars and a square), or frames of a video file, looped."""

    encoded = False

    def __init__(self, spec: StreamSpec) -> None:
        self.spec = spec
        self.target_bps = spec.bitrate_mbps * 1e6
        self.scene: Any = None
        if spec.video in BUILTINS:  # a built-in scene, rendered (testbed.roi.scene)
            from testbed.roi.scene import FrameSource

            self.scene = FrameSource(spec.video, spec.width, spec.height)
        self.container = av.open(spec.video) if spec.video and self.scene is None else None
        self.decoded: Any = None
        self.last_index = -1

    def _image(self, index: int) -> Any:
        spec = self.spec
        if self.scene is not None:
            return av.VideoFrame.from_ndarray(self.scene.rgb(index), format="rgb24")
        if self.container is not None:
            skip = max(0, index - self.last_index - 1)  # frames not sent (send_fps, a pause):
            self.last_index = index  # the clip keeps its own clock
            empty_passes = 0
            while empty_passes < 2:
                if self.decoded is None:
                    self.decoded = self.container.decode(video=0)
                try:
                    frame = next(self.decoded)
                except StopIteration:
                    self.container.seek(0)
                    self.decoded = None
                    empty_passes += 1
                    continue
                empty_passes = 0
                if skip:
                    skip -= 1
                    continue
                return frame.reformat(width=spec.width, height=spec.height, format="yuv420p")
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

    def produce(self, index: int, capture_ns: int) -> Produced:
        return Produced(False, 0, picture=self._image(index))

    def set_target_bitrate(self, bps: float) -> None:
        self.target_bps = bps  # the stack gives it to its encoder

    def request_keyframe(self) -> None:
        """The stack's own encoder answers PLIs."""

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        return {}


def make_source(spec: StreamSpec) -> Source:
    if spec.source == "roi":
        from testbed.roi.source import RoiSource

        return RoiSource(spec.roi_spec(), spec.video, spec.width, spec.height, spec.fps,
                         spec.bitrate_mbps * 1e6)  # fmt: skip
    return SyntheticSource(spec) if spec.source == "synthetic" else PatternSource(spec)
