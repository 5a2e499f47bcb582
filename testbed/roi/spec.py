"""RoiSpec: the `roi` source's parameters (stream.roi), loaded strictly."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from testbed import validate
from testbed.errors import ConfigError
from testbed.validate import strict_mapping

RATE_CONTROLS = ("bitrate", "crf")
KEYS = ("question", "scorer", "gamma", "normalise", "score_every", "enabled", "regions",
        "weights", "model", "rate_control", "crf", "preset", "keyint", "scoring")  # fmt: skip
SCORING = ("auto", "inline", "thread")


@dataclass(frozen=True)
class RoiSpec:
    """question: the user's words. scorer: oracle (regions file), saliency (OpenCV spectral
    residual; ignores the question), clip (open_clip + a weights file), or package.module:Class.
    gamma: the paper's exponent. normalise: min-max the scores to [-1, 1] per frame.
    score_every: score every N frames (the map is kept in between). scoring: inline (on the
    sender's loop, the map is exact for its frame), thread (a worker thread; frames use the newest
    finished map), auto (thread for scorers that say they are slow: clip). enabled: false encodes
    uniformly with the same encoder and settings (the baseline). regions: a regions file: the
    oracle's input, and the relevant region that quality (PSNR) is measured in. rate_control:
    bitrate (the stream's bitrate_mbps, as x264's ABR target) or crf (constant quality `crf`).
    """

    question: str = "what is written on the document?"
    scorer: str = "oracle"
    gamma: float = 3.0
    normalise: bool = True
    score_every: int = 1
    enabled: bool = True
    regions: str | None = None
    weights: str | None = None
    model: str = "MobileCLIP-S1"
    rate_control: str = "bitrate"
    crf: int = 28
    preset: str = "superfast"
    keyint: int = 60
    scoring: str = "auto"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


SCORERS = ("oracle", "saliency", "clip")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium")


def parse_roi(value: Any, src: str, width: int, height: int, key: str = "stream.roi") -> RoiSpec:
    if value is None:
        value = {}
    spec = RoiSpec(**strict_mapping(value, KEYS, src, key, "{question: ..., scorer: saliency}"))  # type: ignore[arg-type]
    if not isinstance(spec.question, str) or not spec.question.strip():
        raise ConfigError(
            src, f"{key}.question", "is empty; say what the user asks about the video"
        )
    g = spec.gamma
    if isinstance(g, bool) or not isinstance(g, int | float) or not math.isfinite(g) or g <= 0:
        raise ConfigError(src, f"{key}.gamma", f"{g!r}: valid: a number > 0 (the paper: 3)")
    for name, lo, hi in (("score_every", 1, 100000), ("crf", 0, 51), ("keyint", 1, 100000)):
        validate.integer(getattr(spec, name), src, f"{key}.{name}", lo, hi)
    if spec.rate_control not in RATE_CONTROLS:
        raise ConfigError(
            src, f"{key}.rate_control", f"{spec.rate_control!r}: valid: {', '.join(RATE_CONTROLS)}"
        )
    if spec.scoring not in SCORING:
        raise ConfigError(src, f"{key}.scoring", f"{spec.scoring!r}: valid: {', '.join(SCORING)}")
    if spec.preset not in PRESETS:
        raise ConfigError(src, f"{key}.preset", f"{spec.preset!r}: valid: {', '.join(PRESETS)}")
    # the scorer itself (a name of the registry, its files and extras) is checked by
    # roi.scorers.check_scorer, which knows the scorers: callers run it after this
    if spec.regions is not None:
        from testbed.roi.regions import load_regions

        load_regions(spec.regions, width, height, src=f"{key}.regions")
    return spec
