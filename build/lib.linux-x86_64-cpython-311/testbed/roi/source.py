"""The `roi` source: frames -> scorer (every score_every frames) -> QP map -> ROI x264 ->
encoded H.264 frames, which a stack sends without an encoder of its own. Stack-neutral: it
follows testbed.rtc.sources.Source (structurally; this layer does not import rtc)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import av

from testbed.roi.encoder import TIME_BASE, RoiEncoder
from testbed.roi.qpmap import summary
from testbed.roi.quality import sei_for
from testbed.roi.scene import FrameSource, yuv_frame
from testbed.roi.scorers import make_scorer
from testbed.roi.scoring import MapUpdater
from testbed.roi.spec import RoiSpec

# per frame: index, mean delta QP, share at QP 51, rectangles, scorer ms (0 if not scored),
# encode ms, the map's age in frames
RoiRecord = tuple[int, float, float, int, float, float, float]


@dataclass(frozen=True)
class RoiProduced:
    """What produce() returns: the fields of testbed.rtc.sources.Produced."""

    keyframe: bool
    size_bytes: int
    payload: bytes
    picture: None = None


class RoiSource:
    encoded = True

    def __init__(self, roi: RoiSpec, video: str | None, width: int, height: int, fps: float,
                 bitrate_bps: float) -> None:  # fmt: skip
        self.roi = roi
        self.fps = fps
        self.frames = FrameSource(video, width, height)
        self.maps: MapUpdater | None = None
        if roi.enabled:
            self.maps = MapUpdater(make_scorer(roi, width, height), roi, width, height)
        self.target_bps = bitrate_bps
        self.encoder = RoiEncoder(width, height, fps, bitrate_bps, roi)
        self.roi_frames: list[RoiRecord] = []
        self.keyframe_wanted = False

    def set_target_bitrate(self, bps: float) -> None:
        self.target_bps = bps

    def request_keyframe(self) -> None:
        """The receiver sent a PLI (it cannot decode): the next frame is a key frame."""
        self.keyframe_wanted = True

    def produce(self, index: int, capture_ns: int) -> RoiProduced:
        rgb = self.frames.rgb(index)
        score_ms, age = self.maps.update(rgb, index) if self.maps else (0.0, math.nan)
        rects = self.maps.rects if self.maps else []
        frame = yuv_frame(rgb)
        frame.pts, frame.time_base = round(index * 90_000 / self.fps), TIME_BASE
        if self.keyframe_wanted:
            frame.pict_type = av.video.frame.PictureType.I
            self.keyframe_wanted = False
        self.encoder.set_bitrate(self.target_bps)
        t = time.perf_counter()
        packets = self.encoder.encode(frame, rects)
        encode_ms = (time.perf_counter() - t) * 1000
        data = b"".join(bytes(p) for p in packets)
        if data:
            data = sei_for(index) + data  # the frame's id, in-band (testbed.roi.quality)
        delta = self.maps.delta if self.maps else None
        mean_delta, at_max = summary(delta) if delta is not None and rects else (0.0, 0.0)
        self.roi_frames.append((index, mean_delta, at_max, len(rects), score_ms, encode_ms, age))
        return RoiProduced(any(p.is_keyframe for p in packets), len(data), data)

    def tables(self) -> dict[str, list[tuple[Any, ...]]]:
        return {"roi_frames": list(self.roi_frames)}
