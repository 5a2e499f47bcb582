"""The built-in scenes' textured background, shared by the scene (scene.py) and the scenes with
ground truth (scenes.py), which each import it from here (neither imports the other for it)."""

from __future__ import annotations

import numpy as np

SHAKE_PX = 12  # the hand camera's shake: the background has this margin on every side


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    import cv2

    small = rng.random((h // cell + 2, w // cell + 2)).astype("float32")
    return np.asarray(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC))


def textured_background(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """The scenes' background: smooth noise at two scales plus fine texture, tinted, with the
    camera shake's margin on every side (float32 RGB)."""
    m = SHAKE_PX * 2
    h, w = height + m, width + m
    base = 0.55 * _smooth_noise(rng, h, w, 96) + 0.3 * _smooth_noise(rng, h, w, 24)
    texture = 0.15 * _smooth_noise(rng, h, w, 3)
    canvas = np.empty((h, w, 3), dtype="float32")
    for ch, tint in enumerate((0.9, 0.75, 0.6)):
        canvas[:, :, ch] = (base * tint + texture) * 230
    return canvas
