"""The receiver-side intake: what a video MLLM would take of the decoded stream.

A model's clock is the capture timestamp, not the wall clock: the intake takes, for each slot of
1 / viewer.fps seconds of media time (RTP timestamp since the first decoded frame), the first
frame of that slot as soon as it is decoded, resized by the model's rule, and stores it
losslessly (PNG). Jitter then cannot move what the model sees; loss and delay can only make a
frame late or missing. Stack-neutral: an endpoint calls due() per decoded frame and take() for
the frames it should keep (off its event loop: take() encodes a PNG).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from testbed.viewer.resize import resize_rgb
from testbed.viewer.spec import ViewerSpec

VIDEO_CLOCK = 90_000
U32 = 1 << 32
FOLDER = "viewer"


class Intake:
    def __init__(self, spec: ViewerSpec, cell: Path) -> None:
        self.spec = spec
        self.folder = cell / FOLDER
        self.folder.mkdir(parents=True, exist_ok=True)
        self.first_ts: int | None = None
        self.next_slot = 0
        self.rows: list[tuple[int, int, int, str, int, int]] = []  # t_ns, rtp_ts, slot, file, w, h

    def due(self, rtp_ts: int) -> int | None:
        """The slot this decoded frame fills, or None if its slot is taken (or it is older)."""
        if self.first_ts is None:
            self.first_ts = rtp_ts
        rel = (rtp_ts - self.first_ts) % U32
        if rel >= U32 // 2:  # before the first decoded frame: a late one
            return None
        slot = math.floor(rel / VIDEO_CLOCK * self.spec.fps + 1e-9)
        if slot < self.next_slot:
            return None
        self.next_slot = slot + 1
        return slot

    def take(self, slot: int, rtp_ts: int, decoded_ns: int, rgb: Any) -> None:
        from PIL import Image

        small = resize_rgb(rgb, self.spec.max_pixels)
        name = f"slot{slot:05d}.png"
        Image.fromarray(small).save(self.folder / name, compress_level=1)  # type: ignore[arg-type]
        h, w = small.shape[:2]  # type: ignore[attr-defined]
        self.rows.append((decoded_ns, rtp_ts, slot, f"{FOLDER}/{name}", w, h))
