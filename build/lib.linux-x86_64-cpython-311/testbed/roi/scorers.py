"""Scorers: a frame (RGB, H x W x 3 uint8) and the question -> relevance per CTU.

A scorer is constructed as Scorer(spec: RoiSpec, width, height) and called as
score(rgb, index) -> (rows, cols) float array; the caller normalises (spec.normalise) and maps
to QP. Built in: oracle, saliency, clip; or `package.module:Class`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import numpy as np

from testbed.errors import ConfigError
from testbed.plugins import load_dotted
from testbed.roi.qpmap import CTU, grid_shape
from testbed.roi.spec import SCORERS, RoiSpec


class Scorer(Protocol):
    def score(self, rgb: np.ndarray, index: int) -> np.ndarray: ...


def _ctu_means(values: np.ndarray, ctu: int = CTU) -> np.ndarray:
    h, w = values.shape
    rows, cols = grid_shape(w, h, ctu)
    padded = np.zeros((rows * ctu, cols * ctu), dtype="float64")
    padded[:h, :w] = values
    counts = np.zeros_like(padded)
    counts[:h, :w] = 1
    s = padded.reshape(rows, ctu, cols, ctu).sum(axis=(1, 3))
    n = counts.reshape(rows, ctu, cols, ctu).sum(axis=(1, 3))
    return np.asarray(s / np.maximum(n, 1))


class OracleScorer:
    """Relevance from a regions file: for tests, and for datasets with annotated regions."""

    def __init__(self, spec: RoiSpec, width: int, height: int) -> None:
        from testbed.roi.regions import load_regions

        if spec.regions is None:
            raise ConfigError("stream.roi", "regions", "the oracle scorer needs a regions file")
        self.regions = load_regions(spec.regions, width, height)

    def score(self, rgb: np.ndarray, index: int) -> np.ndarray:
        return self.regions.relevance(index)


class SaliencyScorer:
    """OpenCV's spectral-residual saliency, averaged per CTU. No weights; ignores the question."""

    def __init__(self, spec: RoiSpec, width: int, height: int) -> None:
        import cv2

        self.cv2 = cv2
        self.model = cv2.saliency.StaticSaliencySpectralResidual_create()  # type: ignore[attr-defined]

    def score(self, rgb: np.ndarray, index: int) -> np.ndarray:
        ok, sal = self.model.computeSaliency(rgb)
        if not ok:
            return np.zeros(grid_shape(rgb.shape[1], rgb.shape[0]))
        return _ctu_means(np.asarray(sal, dtype="float64"))


class ClipScorer:
    """Cosine similarity between each CTU crop's and the question's CLIP features (open_clip,
    from a local weights file; never downloads). Far from real time on 2 cores: it runs in a
    worker thread (scoring: auto) and score_every spaces it out."""

    background = True

    def __init__(self, spec: RoiSpec, width: int, height: int) -> None:
        import open_clip
        import torch

        self.torch = torch
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.model, pretrained=spec.weights
        )
        model.eval()
        try:  # MobileCLIP's train-time branches folded into single convolutions: ~30% faster
            from timm.models import reparameterize_model

            model = reparameterize_model(model)
        except ImportError:
            pass
        tokenizer = open_clip.get_tokenizer(spec.model)
        with torch.no_grad():
            text = model.encode_text(tokenizer([spec.question]))
        self.text = text / text.norm(dim=-1, keepdim=True)
        self.model, self.preprocess = model, preprocess

    def score(self, rgb: np.ndarray, index: int) -> np.ndarray:
        from PIL import Image

        h, w = rgb.shape[:2]
        rows, cols = grid_shape(w, h)
        crops = [Image.fromarray(rgb[r * CTU : (r + 1) * CTU, c * CTU : (c + 1) * CTU])
                 for r in range(rows) for c in range(cols)]  # fmt: skip
        with self.torch.no_grad():
            batch = self.torch.stack([self.preprocess(c) for c in crops])
            feats = self.model.encode_image(batch)
            feats = feats / feats.norm(dim=-1, keepdim=True)
            sims = (feats @ self.text.T).squeeze(-1).numpy()
        return np.asarray(sims, dtype="float64").reshape(rows, cols)


BUILTIN: dict[str, type[Any]] = {
    "oracle": OracleScorer,
    "saliency": SaliencyScorer,
    "clip": ClipScorer,
}


def resolve(name: str, src: str, key: str) -> type[Any]:
    if name in BUILTIN:
        return BUILTIN[name]
    return load_dotted(name, src, key, SCORERS)  # type: ignore[no-any-return]


def check_scorer(spec: RoiSpec, src: str, key: str) -> None:
    """What can be checked without loading a model: the name, files, installed extras."""
    resolve(spec.scorer, src, f"{key}.scorer")
    if spec.scorer == "oracle" and spec.regions is None:
        raise ConfigError(src, f"{key}.regions", "the oracle scorer needs a regions file")
    if spec.scorer == "saliency":
        try:
            import cv2

            cv2.saliency  # noqa: B018  (contrib build only)
        except (ImportError, AttributeError):
            raise ConfigError(
                src,
                f"{key}.scorer",
                "saliency needs opencv-contrib-python-headless (make setup installs it)",
            ) from None
    if spec.scorer == "clip":
        if spec.weights is None or not Path(spec.weights).is_file():
            raise ConfigError(src, f"{key}.weights", f"{spec.weights!r}: the clip scorer needs a local weights file "
                              "(see the README: Context-aware video)")  # fmt: skip
        try:
            import open_clip  # noqa: F401
            import torch  # noqa: F401
        except ImportError:
            raise ConfigError(
                src, f"{key}.scorer", "clip needs the optional extra: pip install -e '.[clip]'"
            ) from None


def make_scorer(spec: RoiSpec, width: int, height: int) -> Scorer:
    scorer: Scorer = resolve(spec.scorer, "stream.roi", "scorer")(spec, width, height)
    return scorer
