"""Frames for the roi source: a file (looped) or `builtin:scene`, a deterministic test scene.

The scene: a textured background and a document (dark glyphs on paper) filmed by a shaking hand
camera: every frame shifts by a few pixels, so every region costs bits in every frame and an
encoder must choose where to spend them. The document is the relevant region; its box, with the
shake's margin, is `scene_regions()` (write it with `testbed roi regions`).
"""

from __future__ import annotations

import math
from typing import Any

import av
import numpy as np

from testbed.roi.background import SHAKE_PX, textured_background
from testbed.roi.scenes import SCENES, scene

BUILTIN_SCENE = "builtin:scene"
BUILTINS = (BUILTIN_SCENE, "builtin:document", "builtin:markers")


def _doc_box(width: int, height: int) -> tuple[int, int, int, int]:
    return round(width * 0.36), round(height * 0.24), round(width * 0.30), round(height * 0.46)


class Scene:
    """Frame k of the scene, the same in every process (seeded)."""

    def __init__(self, width: int, height: int, seed: int = 7) -> None:
        rng = np.random.default_rng(seed)
        canvas = textured_background(width, height, rng)
        x, y, bw, bh = _doc_box(width, height)
        x, y = x + SHAKE_PX, y + SHAKE_PX
        canvas[y : y + bh, x : x + bw] = 235  # paper
        gh, gw = max(6, bh // 24), max(4, bw // 60)  # glyph height, width
        for line in range(2, bh // (2 * gh) - 1):
            top = y + line * 2 * gh
            col = x + 2 * gw
            while col < x + bw - 3 * gw:
                word = int(rng.integers(2, 8))
                for _ in range(word):
                    if col >= x + bw - 3 * gw:
                        break
                    glyph = rng.random((gh, gw)) < 0.45
                    canvas[top : top + gh, col : col + gw][glyph] = 25
                    col += gw + 1
                col += 2 * gw
        self.canvas = np.clip(canvas, 0, 255).astype(np.uint8)
        self.width, self.height = width, height

    def rgb(self, index: int) -> np.ndarray:
        dx = SHAKE_PX + round(SHAKE_PX * math.sin(index / 5.0) * math.cos(index / 17.0))
        dy = SHAKE_PX + round(SHAKE_PX * math.sin(index / 7.0 + 1.0))
        return np.ascontiguousarray(self.canvas[dy : dy + self.height, dx : dx + self.width])


def scene_regions(width: int, height: int) -> dict[str, Any]:
    """The regions file of the built-in scene: the document, with the shake's margin."""
    x, y, bw, bh = _doc_box(width, height)
    s = SHAKE_PX
    x0, y0 = max(0, x - s), max(0, y - s)
    return {"width": width, "height": height, "background": -1.0,
            "regions": [{"x": x0, "y": y0, "w": min(width, x + bw + s) - x0, "h": min(height, y + bh + s) - y0,
                         "relevance": 1.0}]}  # fmt: skip


class FrameSource:
    """RGB frames by index: the built-in scene, or a video file looped (decoded on demand)."""

    def __init__(self, video: str | None, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.scene: Any = None
        if video in (None, BUILTIN_SCENE):
            self.scene = Scene(width, height)
        elif video in SCENES:
            self.scene = scene(video, width, height)
        self.video = video
        self.cache: list[np.ndarray] = []
        self.container: Any = None
        self.decoded: Any = None
        self.exhausted = False

    def rgb(self, index: int) -> np.ndarray:
        if self.scene is not None:
            rgb: np.ndarray = self.scene.rgb(index)
            return rgb
        while not self.exhausted and len(self.cache) <= index:
            if self.container is None:
                self.container = av.open(self.video)
                self.decoded = self.container.decode(video=0)
            try:
                frame = next(self.decoded)
            except StopIteration:
                self.exhausted = True
                self.container.close()
                break
            self.cache.append(
                frame.to_ndarray(width=self.width, height=self.height, format="rgb24")
            )
        return self.cache[index % len(self.cache)]

    def luma(self, index: int) -> np.ndarray:
        """The Y plane the encoder saw (the same swscale conversion)."""
        return np.asarray(yuv_frame(self.rgb(index)).to_ndarray()[: self.height])


def yuv_frame(rgb: np.ndarray) -> Any:
    return av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
