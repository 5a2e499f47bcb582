"""Quality of the RECEIVED frames: PSNR (luma) inside the relevant region and outside it.

Frames are identified in-band: the sender puts an H.264 SEI (user data unregistered) carrying
the frame index in front of every frame; the receiver reads it from the frame leaving the jitter
buffer and compares the decoded picture with the same frame of the same source.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd

from testbed.roi.regions import Regions, load_regions
from testbed.roi.scene import FrameSource
from testbed.roi.spec import RoiSpec

SEI_UUID = bytes.fromhex("7462726f69696478") * 2  # "tbroiidx" x 2: no zero bytes
DIGITS = 10
SEI_NAL = b"\x00\x00\x00\x01\x06\x05" + bytes([16 + DIGITS]) + SEI_UUID
SEI_RE = re.compile(re.escape(SEI_UUID) + rb"(\d{%d})" % DIGITS)


def sei_for(index: int) -> bytes:
    """An SEI NAL (Annex B) carrying the frame index as ASCII digits (never needs escaping)."""
    return SEI_NAL + b"%0*d" % (DIGITS, index) + b"\x80"


def index_from(head: bytes) -> int | None:
    m = SEI_RE.search(head)
    return int(m.group(1)) if m else None


def mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype("float64") - b.astype("float64")) ** 2))


def psnr_of_mse(m: float) -> float:
    """8-bit PSNR in dB; 100 for identical pictures."""
    return 100.0 if m == 0 else 10 * math.log10(255**2 / m)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return math.nan if a.size == 0 else psnr_of_mse(mse(a, b))


class QualityMeter:
    """Per received frame: (index, PSNR whole, inside the relevant region, outside), dB."""

    def __init__(self, roi: RoiSpec, video: str | None, width: int, height: int) -> None:
        self.source = FrameSource(video, width, height)
        self.regions: Regions | None = (
            load_regions(roi.regions, width, height) if roi.regions else None
        )
        self.height = height
        self.records: list[tuple[int, float, float, float]] = []

    def add(self, index: int, luma: np.ndarray) -> None:
        ref = self.source.luma(index)
        got = luma[: self.height]
        if got.shape != ref.shape:
            self.records.append((index, math.nan, math.nan, math.nan))
            return
        whole = psnr(got, ref)
        if self.regions is None:
            self.records.append((index, whole, math.nan, math.nan))
            return
        mask = self.regions.mask(index)
        self.records.append(
            (index, whole, psnr(got[mask], ref[mask]), psnr(got[~mask], ref[~mask]))
        )


ROI_COLUMNS = {
    "roi_mean_delta_qp": "mean delta QP of the frame's map (0: uniform)",
    "roi_share_max_qp": "share of the frame at QP 51",
    "roi_rects": "addroi rectangles the frame was encoded with",
    "scorer_ms": "scorer time of the map that became current at this frame (0: map reused)",
    "roi_map_age": "frames between the frame the map was scored on and this one (null: no map)",
    "encode_ms": "x264 time for the frame (incl. the ROI filter graph)",
    "psnr_db": "luma PSNR of the received, decoded frame (null if not decoded)",
    "psnr_roi_db": "inside the relevant region (the regions file)",
    "psnr_bg_db": "outside it",
}


def add_roi_columns(
    frames: pd.DataFrame, roi_frames: pd.DataFrame, quality: pd.DataFrame
) -> pd.DataFrame:
    """The per-frame table plus the ROI source's map summary and the receiver's quality
    (the endpoint record's roi_frames and quality tables)."""
    q = quality.drop_duplicates("frame_id")
    return frames.merge(roi_frames, on="frame_id", how="left").merge(q, on="frame_id", how="left")
