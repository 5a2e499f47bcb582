"""Built-in scenes with ground truth, filmed by the same shaking hand camera as builtin:scene.

builtin:document  a sheet of real English words over a textured background, in lines of four
                  text sizes (30 / 22 / 16 / 12 px at 720 lines, scaled with the height): what
                  a reader (OCR, a model) can read at a bitrate is what the lines say.
builtin:markers   ArUco markers (OpenCV's DICT_4X4_50) of several sizes on the same background.

Each knows its truth: the lines' text and boxes, the markers' ids and boxes (in frame pixels,
with the shake's margin), and its relevant boxes (what the oracle ROI scorer favours: the
paper; each marker).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

SHAKE_PX = 12
TEXT_PX_AT_720 = (30, 22, 16, 12)  # font size (px) per size class, at 720 lines
LINES_PER_SIZE = 3
WORDS = [
    "the",
    "river",
    "runs",
    "past",
    "the",
    "old",
    "mill",
    "where",
    "children",
    "play",
    "and",
    "farmers",
    "bring",
    "their",
    "grain",
    "every",
    "morning",
    "before",
    "the",
    "market",
    "opens",
    "in",
    "the",
    "square",
    "near",
    "the",
    "church",
    "with",
    "a",
    "tall",
    "clock",
    "tower",
    "that",
    "rings",
    "twice",
    "each",
    "hour",
    "while",
    "merchants",
    "call",
    "out",
    "prices",
    "for",
    "apples",
    "bread",
    "cheese",
    "fish",
    "and",
    "warm",
    "coffee",
    "served",
    "from",
    "a",
    "green",
    "cart",
    "beside",
    "the",
    "fountain",
    "people",
    "walk",
    "slowly",
    "through",
    "narrow",
    "streets",
    "reading",
    "signs",
    "painted",
    "above",
    "small",
    "shops",
    "selling",
    "books",
    "lamps",
    "maps",
    "shoes",
    "hats",
    "letters",
    "stamps",
    "and",
    "postcards",
    "from",
    "distant",
    "cities",
    "along",
    "the",
    "northern",
    "coast",
    "summer",
    "evenings",
    "bring",
    "music",
    "from",
    "open",
    "windows",
    "and",
    "quiet",
    "conversations",
    "under",
    "bright",
    "stars",
]


def _font(px: int) -> Any:
    import matplotlib
    from PIL import ImageFont

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    return ImageFont.truetype(str(path), size=px)


def _background(width: int, height: int, seed: int) -> np.ndarray:
    from testbed.roi.background import textured_background

    return textured_background(width, height, np.random.default_rng(seed))


def shake(index: int) -> tuple[int, int]:
    """The camera's offset (dx, dy) into the canvas at frame `index` (as builtin:scene)."""
    dx = SHAKE_PX + round(SHAKE_PX * math.sin(index / 5.0) * math.cos(index / 17.0))
    dy = SHAKE_PX + round(SHAKE_PX * math.sin(index / 7.0 + 1.0))
    return dx, dy


@dataclass(frozen=True)
class Item:
    """One thing to read: a line (text) or a marker (id), and its box in frame pixels (the
    union over the shake: where it may be in any frame)."""

    text: str
    size_px: int
    box: tuple[int, int, int, int]


class GroundTruthScene:
    kind = ""

    def __init__(self, width: int, height: int, canvas: np.ndarray, items: list[Item],
                 relevant: list[tuple[int, int, int, int]]) -> None:  # fmt: skip
        self.width, self.height = width, height
        self.canvas = np.clip(canvas, 0, 255).astype(np.uint8)
        self.items = items
        self.relevant = relevant  # boxes in frame pixels: the paper; each marker

    def rgb(self, index: int) -> np.ndarray:
        dx, dy = shake(index)
        return np.ascontiguousarray(self.canvas[dy : dy + self.height, dx : dx + self.width])

    def regions(self) -> dict[str, Any]:
        """A regions file (testbed.roi.regions): the scene's relevant boxes."""
        return {"width": self.width, "height": self.height, "background": -1.0,
                "regions": [{"x": x, "y": y, "w": w, "h": h, "relevance": 1.0}
                            for x, y, w, h in self.relevant]}  # fmt: skip


def _in_frame(x: int, y: int, w: int, h: int, width: int, height: int) -> tuple[int, int, int, int]:
    """A canvas box as a frame box, widened by the shake (the camera moves 0..2*SHAKE_PX)."""
    x0, y0 = max(0, x - 2 * SHAKE_PX), max(0, y - 2 * SHAKE_PX)
    x1, y1 = min(width, x + w), min(height, y + h)
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


class DocumentScene(GroundTruthScene):
    kind = "document"

    def __init__(self, width: int, height: int, seed: int = 11) -> None:
        from PIL import Image, ImageDraw

        canvas = _background(width, height, seed)
        rng = np.random.default_rng(seed)
        # the paper: a third of the width, so most of the frame (and of the bits) is background
        px, py, pw, ph = (
            round(width * 0.33),
            round(height * 0.06),
            round(width * 0.34),
            round(height * 0.9),
        )
        px, py = px + SHAKE_PX, py + SHAKE_PX
        background = canvas.copy()
        canvas[py : py + ph, px : px + pw] = 240  # paper
        img = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8))
        draw = ImageDraw.Draw(img)
        items: list[Item] = []
        y = py + round(height * 0.03)
        scale = height / 720
        for size in TEXT_PX_AT_720:
            px_size = max(6, round(size * scale))
            font = _font(px_size)
            for _ in range(LINES_PER_SIZE):
                words: list[str] = []
                while True:
                    nxt = " ".join([*words, str(WORDS[int(rng.integers(len(WORDS)))])])
                    if draw.textlength(nxt, font=font) > pw - 2 * round(width * 0.03):
                        break
                    words = nxt.split()
                text = " ".join(words)
                x = px + round(width * 0.03)
                draw.text((x, y), text, fill=(20, 20, 20), font=font)
                left, top, right, bottom = (
                    round(v) for v in draw.textbbox((x, y), text, font=font)
                )
                items.append(
                    Item(
                        text, size, _in_frame(left, top, right - left, bottom - top, width, height)
                    )
                )
                y += round(px_size * 1.9)
        bottom = y + round(height * 0.02)  # the paper ends below the last line
        out = np.asarray(img, dtype="float32").copy()
        out[bottom : py + ph, px : px + pw] = background[bottom : py + ph, px : px + pw]
        super().__init__(
            width, height, out, items, [_in_frame(px, py, pw, bottom - py, width, height)]
        )


class MarkersScene(GroundTruthScene):
    kind = "markers"

    def __init__(self, width: int, height: int, seed: int = 13) -> None:
        import cv2

        canvas = _background(width, height, seed)
        dictionary = cv2.aruco.getPredefinedDictionary(cv2.aruco.DICT_4X4_50)
        rng = np.random.default_rng(seed)
        ids = [int(i) for i in rng.choice(50, size=6, replace=False)]
        sizes = [0.16, 0.11, 0.08, 0.06, 0.045, 0.035]  # of the height
        items: list[Item] = []
        cols = 3
        for k, (marker, share) in enumerate(zip(ids, sizes, strict=True)):
            side = max(12, round(share * height))
            cx = round(width * (0.18 + 0.32 * (k % cols))) + SHAKE_PX
            cy = round(height * (0.3 + 0.42 * (k // cols))) + SHAKE_PX
            x, y = cx - side // 2, cy - side // 2
            quiet = max(2, side // 6)  # the white margin a detector needs
            canvas[y - quiet : y + side + quiet, x - quiet : x + side + quiet] = 255
            img = cv2.aruco.generateImageMarker(dictionary, marker, side)
            canvas[y : y + side, x : x + side] = img[:, :, None].astype("float32")
            items.append(Item(str(marker), side, _in_frame(x - quiet, y - quiet, side + 2 * quiet,
                                                          side + 2 * quiet, width, height)))  # fmt: skip
        super().__init__(width, height, canvas, items, [i.box for i in items])


SCENES = {"builtin:document": DocumentScene, "builtin:markers": MarkersScene}


@cache
def scene(name: str, width: int, height: int) -> GroundTruthScene:
    return SCENES[name](width, height)
