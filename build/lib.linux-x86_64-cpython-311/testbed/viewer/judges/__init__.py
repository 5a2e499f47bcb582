"""Judges: answer a question from the frames a model would have seen. Pluggable like ABR
controllers: a built-in name, an entry point of group `rtc_testbed.judges`, or
`package.module:Class`; constructed as Judge(**judge_params)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from testbed.errors import ConfigError
from testbed.plugins import resolve_named
from testbed.viewer.judges.base import Answer, Judge, ViewerFrame

BUILTIN = {
    "ocr": "testbed.viewer.judges.ocr:OcrJudge",
    "markers": "testbed.viewer.judges.markers:MarkersJudge",
    "mllm": "testbed.viewer.judges.mllm:MllmJudge",
}
GROUP = "rtc_testbed.judges"

__all__ = ["Answer", "Judge", "ViewerFrame", "known", "make_judge", "resolve"]


def known() -> list[str]:
    return sorted({*BUILTIN, *(ep.name for ep in entry_points(group=GROUP))})


def resolve(name: str, src: str, key: str = "viewer.judge") -> type[Any]:
    cls: type[Any] = resolve_named(name, BUILTIN, GROUP, "answer", "answer(question, frames)",
                                   src, key)  # fmt: skip
    return cls


def make_judge(name: str, params: Mapping[str, Any] | None, src: str = "viewer") -> Judge:
    cls = resolve(name, src)
    params = dict(params or {})
    try:
        inspect.signature(cls).bind(**params)
        judge: Judge = cls(**params)
    except (TypeError, ValueError) as e:
        raise ConfigError(src, "viewer.judge_params", f"{e} (for {name})") from None
    return judge
