"""ViewerSpec: the AI viewer's parameters (stream.viewer), loaded strictly."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from testbed import validate
from testbed.errors import ConfigError
from testbed.validate import strict_mapping

KEYS = ("enabled", "fps", "max_pixels", "judge", "judge_params", "questions", "model_ms",
        "judge_after")  # fmt: skip
QWEN_MAX_PIXELS = 602_112  # Qwen2.5-VL's default max_pixels (768 * 28 * 28)


@dataclass(frozen=True)
class ViewerSpec:
    """enabled: take frames at all. fps: frames a model takes per second of video (deployed video
    MLLMs: 2). max_pixels: the resize budget (Qwen2.5-VL's rule). judge: auto (markers for
    builtin:markers, ocr otherwise) | ocr | markers | mllm | an entry point name |
    package.module:Class, with judge_params. questions: a question file
    (default: the built-in scene's). model_ms: the model's own time in the response-latency
    view (the paper: ~232 ms of a 300 ms budget). judge_after: score at the end of each cell
    (true) or only with `testbed judge` (false)."""

    enabled: bool = False
    fps: float = 2.0
    max_pixels: int = QWEN_MAX_PIXELS
    judge: str = "auto"
    judge_params: dict[str, Any] | None = None
    questions: str | None = None
    model_ms: float = 232.0
    judge_after: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_viewer(value: Any, src: str, key: str = "stream.viewer") -> ViewerSpec:
    if value is None or value is False:
        return ViewerSpec()
    if value is True:
        value = {"enabled": True}
    data = strict_mapping(value, KEYS, src, key, "{fps: 2, judge: ocr}")
    data.setdefault("enabled", True)
    if not isinstance(data["enabled"], bool):
        raise ConfigError(src, f"{key}.enabled", f"{data['enabled']!r}: valid: true, false")
    if "fps" in data:
        data["fps"] = validate.number(data["fps"], src, f"{key}.fps", 0, 60, lo_open=True)
    if "max_pixels" in data:
        validate.integer(data["max_pixels"], src, f"{key}.max_pixels", 28 * 28)
    if "model_ms" in data:
        data["model_ms"] = validate.number(data["model_ms"], src, f"{key}.model_ms", 0, 60_000)
    if not isinstance(data.get("judge", "auto"), str):
        raise ConfigError(src, f"{key}.judge", "expected a judge name")
    params = data.get("judge_params")
    if params is not None:
        data["judge_params"] = dict(validate.mapping(params, src, f"{key}.judge_params"))
    spec = ViewerSpec(**data)  # type: ignore[arg-type]
    from testbed.viewer.judges import resolve

    if spec.judge != "auto":
        resolve(spec.judge, src, f"{key}.judge")
    if spec.questions is not None:
        from testbed.viewer.questions import load_questions

        load_questions(spec.questions)
    return spec
