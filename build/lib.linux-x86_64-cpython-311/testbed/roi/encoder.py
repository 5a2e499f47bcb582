"""libx264 (live) or libx265 (offline) with per-region QP offsets, through FFmpeg's `addroi`
filter (PyAV's bundled FFmpeg).

Traps (all silent, guarded by tests/system/test_roi.py): ROI is ignored in constant-QP mode and
when AQ is off (x264's ultrafast preset turns AQ off: we force aq-mode=1); x264 with
tune=zerolatency honours it; x265 ignores it with cutree off or rc-lookahead 0 (which
tune=zerolatency sets), so x265 keeps its lookahead: it delays output by frames, which is why it
is offline only (the paper's authors encoded HEVC offline too). The filter graph is rebuilt only
when the rectangles change.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import av

from testbed.roi.qpmap import Rect
from testbed.roi.spec import RoiSpec

TIME_BASE = Fraction(1, 90_000)
ENCODERS = {"x264": ("libx264", "h264"), "x265": ("libx265", "hevc")}  # name: (encoder, decoder)


class RoiEncoder:
    def __init__(
        self,
        width: int,
        height: int,
        fps: float,
        bitrate_bps: float,
        spec: RoiSpec,
        encoder: str = "x264",
    ) -> None:
        if encoder not in ENCODERS:
            raise ValueError(f"encoder {encoder!r}: valid: {', '.join(ENCODERS)}")
        self.width, self.height, self.fps, self.spec = width, height, fps, spec
        self.encoder = encoder
        self.bitrate_bps = bitrate_bps
        self.codec: Any = None
        self.graph: Any = None
        self.rects: tuple[Rect, ...] | None = None
        self.graph_builds = 0

    def _open(self) -> None:
        c: Any = av.CodecContext.create(ENCODERS[self.encoder][0], "w")
        c.width, c.height, c.pix_fmt = self.width, self.height, "yuv420p"
        c.time_base = TIME_BASE
        c.framerate = Fraction(self.fps).limit_denominator(1001)
        k = self.spec.keyint
        params = f"aq-mode=1:keyint={k}:min-keyint={k}:scenecut=0"
        options = {"preset": self.spec.preset}
        if self.encoder == "x264":
            options.update({"tune": "zerolatency", "profile": "baseline", "x264-params": params})
        else:  # cutree and the lookahead stay on: without them x265 drops the ROI
            options["x265-params"] = params + ":log-level=error"
        if self.spec.rate_control == "crf":
            options["crf"] = str(self.spec.crf)
        else:
            c.bit_rate = int(self.bitrate_bps)
            options.update(maxrate=str(int(self.bitrate_bps)), bufsize=str(int(self.bitrate_bps)))
        c.options = options
        c.thread_count = 1
        self.codec = c

    def set_bitrate(self, bitrate_bps: float) -> None:
        """A new target; like aiortc, the encoder is re-opened only for a change over 10%."""
        if abs(bitrate_bps - self.bitrate_bps) > 0.1 * self.bitrate_bps:
            self.bitrate_bps = bitrate_bps
            self.codec = None

    def _graph(self, rects: tuple[Rect, ...]) -> Any:
        if rects != self.rects:
            g = av.filter.Graph()
            fmt = av.video.format.VideoFormat("yuv420p")
            last = g.add_buffer(
                width=self.width, height=self.height, format=fmt, time_base=TIME_BASE
            )
            for r in rects:
                node = g.add(
                    "addroi", f"x={r.x}:y={r.y}:w={r.w}:h={r.h}:qoffset={r.qoffset:.4f}:clear=0"
                )
                last.link_to(node)
                last = node
            sink = g.add("buffersink")
            last.link_to(sink)
            g.configure()
            self.graph, self.rects = g, rects
            self.graph_builds += 1
        return self.graph

    def encode(self, frame: Any, rects: list[Rect]) -> list[Any]:
        """Encode one yuv420p frame (pts in 1/90000) with these ROI rectangles ([] = uniform)."""
        if self.codec is None:
            self._open()
        if rects:
            graph = self._graph(tuple(rects))
            graph.push(frame)
            frame = graph.pull()
        return list(self.codec.encode(frame))

    def flush(self) -> list[Any]:
        """The packets still inside the encoder (x265's lookahead holds some frames back)."""
        return [] if self.codec is None else list(self.codec.encode(None))
