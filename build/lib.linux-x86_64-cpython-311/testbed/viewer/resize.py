"""The resize a video MLLM applies before it sees a frame: Qwen2.5-VL's smart_resize.

Both sides become multiples of 28 (the patch size times the merge size), the area stays within
[min_pixels, max_pixels], the aspect ratio as close as that allows. Pure.
"""

from __future__ import annotations

import math

FACTOR = 28
MIN_PIXELS = 56 * 56


def smart_resize(height: int, width: int, max_pixels: int, factor: int = FACTOR,
                 min_pixels: int = MIN_PIXELS) -> tuple[int, int]:  # fmt: skip
    """(height, width) the model sees a height x width frame as."""
    h = max(factor, round(height / factor) * factor)
    w = max(factor, round(width / factor) * factor)
    if h * w > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h = max(factor, math.floor(height / beta / factor) * factor)
        w = max(factor, math.floor(width / beta / factor) * factor)
    elif h * w < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h = math.ceil(height * beta / factor) * factor
        w = math.ceil(width * beta / factor) * factor
    return h, w


def resize_rgb(rgb: object, max_pixels: int) -> object:
    """An RGB array resized as the model would (bicubic, as Qwen2.5-VL's processor)."""
    import numpy as np
    from PIL import Image

    arr = np.asarray(rgb)
    h, w = smart_resize(arr.shape[0], arr.shape[1], max_pixels)
    if (h, w) == arr.shape[:2]:
        return arr
    return np.asarray(Image.fromarray(arr).resize((w, h), Image.Resampling.BICUBIC))
