"""Regions files: boxes with a relevance, optionally per frame range. The oracle scorer reads
them, and quality is measured inside them (the relevant region) and outside.

  {"width": 1280, "height": 720,
   "regions": [{"x": 400, "y": 160, "w": 480, "h": 320, "relevance": 1.0, "frames": [0, 899]}]}

(YAML too.) Outside every box, relevance is `background` (default -1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from testbed import yamlio
from testbed.errors import ConfigError
from testbed.roi.qpmap import CTU, grid_shape


@dataclass(frozen=True)
class Box:
    x: int
    y: int
    w: int
    h: int
    relevance: float
    first: int
    last: int | None


@dataclass(frozen=True)
class Regions:
    width: int
    height: int
    boxes: tuple[Box, ...]
    background: float = -1.0

    def active(self, index: int) -> list[Box]:
        return [b for b in self.boxes if b.first <= index and (b.last is None or index <= b.last)]

    def mask(self, index: int) -> np.ndarray:
        """Pixels inside any relevant box (relevance > 0) at this frame."""
        m = np.zeros((self.height, self.width), dtype=bool)
        for b in self.active(index):
            if b.relevance > 0:
                m[b.y : b.y + b.h, b.x : b.x + b.w] = True
        return m

    def relevance(self, index: int, ctu: int = CTU) -> np.ndarray:
        """Per CTU: the relevance of the box covering most of it (any overlap counts, so a box is
        never coarser than asked), else the background."""
        rows, cols = grid_shape(self.width, self.height, ctu)
        out = np.full((rows, cols), self.background)
        best = np.zeros((rows, cols))
        for b in self.active(index):
            for r in range(b.y // ctu, min(rows, -(-(b.y + b.h) // ctu))):
                for c in range(b.x // ctu, min(cols, -(-(b.x + b.w) // ctu))):
                    ox = min(b.x + b.w, (c + 1) * ctu) - max(b.x, c * ctu)
                    oy = min(b.y + b.h, (r + 1) * ctu) - max(b.y, r * ctu)
                    share = max(0, ox) * max(0, oy) / (ctu * ctu)
                    if share > best[r, c]:
                        best[r, c], out[r, c] = share, b.relevance
        return out


def load_regions(path: str, width: int, height: int, src: str = "regions") -> Regions:
    """Parse and check a regions file against the video size; errors name the file and key.
    A built-in scene's name (builtin:document, builtin:markers) is that scene's own region."""
    from testbed.roi.scenes import SCENES, scene

    # a malformed file: one line naming the file and the line (yamlio.read_yaml)
    data = scene(path, width, height).regions() if path in SCENES else yamlio.read_yaml(path)
    if not isinstance(data, dict) or "regions" not in data:
        raise ConfigError(path, "", "expected {width, height, regions: [{x, y, w, h, relevance}]}")
    w, h = data.get("width"), data.get("height")
    if (w, h) != (width, height):
        raise ConfigError(
            path, "width/height", f"{w}x{h} does not match the video's {width}x{height}"
        )
    boxes = []
    for i, r in enumerate(data["regions"] or []):
        where = f"regions[{i}]"
        if not isinstance(r, dict):
            raise ConfigError(path, where, "expected a mapping with x, y, w, h, relevance")
        try:
            x, y, bw, bh = (int(r[k]) for k in ("x", "y", "w", "h"))
            rel = float(r.get("relevance", 1.0))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(
                path, where, f"needs whole x, y, w, h and a relevance ({e})"
            ) from None
        if bw <= 0 or bh <= 0 or x < 0 or y < 0 or x + bw > width or y + bh > height:
            raise ConfigError(
                path, where, f"box {x},{y} {bw}x{bh} is not inside the {width}x{height} frame"
            )
        if not -1 <= rel <= 1:
            raise ConfigError(path, f"{where}.relevance", f"{rel}: valid: -1 to 1")
        frames = r.get("frames") or [0, None]
        try:
            first, last = int(frames[0]), None if frames[1] is None else int(frames[1])
        except (IndexError, KeyError, TypeError, ValueError):
            raise ConfigError(path, f"{where}.frames", f"{frames!r}: expected [first, last or "
                              "null]") from None  # fmt: skip
        boxes.append(Box(x, y, bw, bh, rel, first, last))
    background = data.get("background", -1.0)
    if isinstance(background, bool) or not isinstance(background, int | float):
        raise ConfigError(path, "background", f"{background!r}: expected a number from -1 to 1")
    background = float(background)
    return Regions(width, height, tuple(boxes), background)
