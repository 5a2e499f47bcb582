"""Offline encoding of a clip, uniform vs ROI, with the live path's encoder, scorer and map:
the bits each choice costs and the quality it buys (PSNR inside / outside the relevant region).
No network: what the encoder does, separated from what the link does. Also the guard that ROI
encoding still shifts bits toward the relevant region (tests/system/test_roi.py)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import av
import numpy as np

from testbed.roi.encoder import ENCODERS, TIME_BASE, RoiEncoder
from testbed.roi.quality import mse, psnr_of_mse
from testbed.roi.regions import Regions
from testbed.roi.scene import FrameSource, yuv_frame
from testbed.roi.scorers import make_scorer
from testbed.roi.scoring import MapUpdater
from testbed.roi.spec import RoiSpec


@dataclass(frozen=True)
class EncodeResult:
    encoder: str
    enabled: bool
    rate_control: str
    bitrate_mbps: float
    psnr_roi_db: float
    psnr_bg_db: float
    encode_ms: float
    scorer_ms: float
    rects: float


@dataclass(frozen=True)
class Clip:
    """What to encode: a video file (None: the built-in scene), its size, rate and length, and
    where the relevant region is."""

    video: str | None
    width: int
    height: int
    fps: float
    frames: int
    regions: Regions


def encode_clip(
    clip: Clip,
    bitrate_mbps: float,
    spec: RoiSpec,
    skip: int = 30,
    encoder: str = "x264",
    on_decoded: Callable[[int, Any], None] | None = None,
) -> EncodeResult:
    """Encode the clip; quality and bitrate over the frames after the first `skip`. Decoded
    frames are matched to their source frames by timestamp (x265 outputs them late);
    on_decoded(index, frame) sees each decoded av.VideoFrame (the AI viewer's offline intake)."""
    video, width, height, fps, frames, regions = (clip.video, clip.width, clip.height, clip.fps,
                                                  clip.frames, clip.regions)  # fmt: skip
    source = FrameSource(video, width, height)
    inline = replace(spec, scoring="inline")  # offline: every frame gets its own exact map
    maps = (
        MapUpdater(make_scorer(spec, width, height), inline, width, height)
        if spec.enabled
        else None
    )
    enc = RoiEncoder(width, height, fps, bitrate_mbps * 1e6, spec, encoder)
    dec: Any = av.CodecContext.create(ENCODERS[encoder][1], "r")
    rects: list = []  # type: ignore[type-arg]
    bits, inside, outside, enc_ms, score_ms, n_rects = 0, [], [], [], [], []
    step = round(90_000 / fps)
    refs: dict[int, np.ndarray] = {}

    def compare_frame(d: av.VideoFrame) -> None:
        if d.pts is None:
            raise RuntimeError("the decoder returned a frame without a timestamp")
        i = round(d.pts / step)
        ref = refs.pop(i)
        if on_decoded is not None:
            on_decoded(i, d)
        if i >= skip:
            got = d.to_ndarray()[:height]
            mask = regions.mask(i)
            inside.append(mse(got[mask], ref[mask]))
            outside.append(mse(got[~mask], ref[~mask]))

    def take(packets: list[Any]) -> None:
        nonlocal bits
        for p in packets:
            if p.pts is not None and p.pts >= skip * step:
                bits += p.size * 8
            for d in dec.decode(p):
                compare_frame(d)

    for i in range(frames):
        rgb = source.rgb(i)
        if maps is not None:
            ms, _ = maps.update(rgb, i)
            rects = maps.rects
            if i % spec.score_every == 0:
                score_ms.append(ms)
        frame = yuv_frame(rgb)
        frame.pts, frame.time_base = i * step, TIME_BASE
        refs[i] = frame.to_ndarray()[:height]
        t = time.perf_counter()
        packets = enc.encode(frame, rects)
        enc_ms.append((time.perf_counter() - t) * 1000)
        take(packets)
        n_rects.append(len(rects))
    take(enc.flush())
    for d in dec.decode(None):  # HEVC's B-frames: the decoder holds frames for reordering
        compare_frame(d)
    if refs:
        raise RuntimeError(f"{len(refs)} of {frames} frames were never decoded")
    seconds = (frames - skip) / fps
    return EncodeResult(
        encoder, spec.enabled, spec.rate_control, bits / seconds / 1e6, _db(inside), _db(outside),
        float(np.mean(enc_ms)), float(np.mean(score_ms)) if score_ms else 0.0, float(np.mean(n_rects)),
    )  # fmt: skip


def _db(mses: list[float]) -> float:
    """PSNR of the mean squared error over frames (not the mean of per-frame PSNRs)."""
    return psnr_of_mse(float(np.mean(mses))) if mses else math.nan


def compare(
    clip: Clip, bitrate_mbps: float, spec: RoiSpec, encoder: str = "x264"
) -> list[EncodeResult]:
    """Uniform and ROI at the same bitrate target, then uniform and ROI at the same CRF."""
    out = []
    for rc in ("bitrate", "crf"):
        for enabled in (False, True):
            s = replace(spec, enabled=enabled, rate_control=rc)
            out.append(encode_clip(clip, bitrate_mbps, s, encoder=encoder))
    return out
