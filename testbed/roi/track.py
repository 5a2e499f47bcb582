"""The `roi` source: frames -> scorer (every score_every frames) -> QP map -> ROI x264 ->
av.Packets, which aiortc packetizes as H.264 without its own encoder."""

from __future__ import annotations

import math
import time
from typing import Any

import av

from testbed.roi.encoder import TIME_BASE, RoiEncoder
from testbed.roi.qpmap import summary
from testbed.roi.quality import sei_for
from testbed.roi.scene import FrameSource, yuv_frame
from testbed.roi.scorers import make_scorer
from testbed.roi.scoring import MapUpdater
from testbed.roi.spec import RoiSpec
from testbed.rtc.sources import PacedTrack
from testbed.rtc.spec import StreamSpec

# per frame: index, mean delta QP, share at QP 51, rectangles, scorer ms (0 if not scored),
# encode ms, the map's age in frames
RoiRecord = tuple[int, float, float, int, float, float, float]


class RoiTrack(PacedTrack):
    def __init__(self, spec: StreamSpec) -> None:
        super().__init__(spec)
        self.roi: RoiSpec = spec.roi_spec()
        self.source = FrameSource(spec.video, spec.width, spec.height)
        self.maps: MapUpdater | None = None
        if self.roi.enabled:
            scorer = make_scorer(self.roi, spec.width, spec.height)
            self.maps = MapUpdater(scorer, self.roi, spec.width, spec.height)
        self.encoder = RoiEncoder(spec.width, spec.height, spec.fps, self.target_bps, self.roi)
        self.roi_frames: list[RoiRecord] = []
        self.keyframe_wanted = False

    def request_keyframe(self) -> None:
        """The receiver sent a PLI (it cannot decode): the next frame is a key frame."""
        self.keyframe_wanted = True

    async def recv(self) -> Any:
        index, pts = await self._wait_turn()
        capture = time.monotonic_ns()
        rgb = self.source.rgb(index)
        score_ms, age = self.maps.update(rgb, index) if self.maps else (0.0, math.nan)
        rects = self.maps.rects if self.maps else []
        frame = yuv_frame(rgb)
        frame.pts, frame.time_base = pts, TIME_BASE
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
        keyframe = any(p.is_keyframe for p in packets)
        delta = self.maps.delta if self.maps else None
        mean_delta, at_max = summary(delta) if delta is not None and rects else (0.0, 0.0)
        self.roi_frames.append((index, mean_delta, at_max, len(rects), score_ms, encode_ms, age))
        self.frames.append((index, pts, capture, len(data), keyframe, self.target_bps))
        out = av.Packet(data)
        out.pts, out.time_base = pts, TIME_BASE
        return out
