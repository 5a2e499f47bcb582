"""The `mllm` judge: any OpenAI-compatible chat-completions server (vLLM, SGLang, Ollama, LM
Studio...). The sampled frames go as images (PNG data URLs) with the question and its options;
temperature 0; the answer letter is parsed strictly (a reply that is not one of the option
letters is a failure for that question, recorded with the raw reply).

base_url, model and api_key come from judge_params or the environment (RTC_TESTBED_MLLM_URL,
RTC_TESTBED_MLLM_MODEL, RTC_TESTBED_MLLM_KEY). The standard library's HTTP client is used on
purpose (one POST; the SDKs' own retries would hide per-attempt latency, which is recorded).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import time
import urllib.error
import urllib.request

from testbed.errors import ConfigError
from testbed.viewer.judges.base import Answer, ViewerFrame
from testbed.viewer.questions import Question

PROMPT = ("Answer the multiple-choice question about the video frames above. Reply with the "
          "letter of the correct option only.\n\nQuestion: {question}\nOptions:\n{options}")  # fmt: skip
_LETTER = re.compile(r"^\W*([A-Z])\W*$")


def parse_letter(reply: str, letters: list[str]) -> str | None:
    """'B', 'B)', '(B)', ' b. ' -> 'B'; anything else (a sentence, two letters) -> None."""
    m = _LETTER.match(reply.strip().upper())
    return m.group(1) if m and m.group(1) in letters else None


def png_data_url(rgb: object) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")  # type: ignore[arg-type]
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class MllmJudge:
    def __init__(self, base_url: str | None = None, model: str | None = None,
                 api_key: str | None = None, timeout_s: float = 60.0, retries: int = 2,
                 max_frames: int = 16) -> None:  # fmt: skip
        self.base_url = (base_url or os.environ.get("RTC_TESTBED_MLLM_URL") or "").rstrip("/")
        self.model = model or os.environ.get("RTC_TESTBED_MLLM_MODEL") or ""
        self.api_key = api_key or os.environ.get("RTC_TESTBED_MLLM_KEY") or "none"
        if not self.base_url or not self.model:
            raise ConfigError("viewer.judge_params", "base_url" if not self.base_url else "model",
                              "the mllm judge needs base_url (e.g. http://HOST:8000/v1) and model, "
                              "in judge_params or RTC_TESTBED_MLLM_URL / RTC_TESTBED_MLLM_MODEL")  # fmt: skip
        self.timeout_s, self.retries, self.max_frames = timeout_s, retries, max_frames

    def request(self, question: Question, frames: list[ViewerFrame]) -> dict[str, object]:
        step = max(1, -(-len(frames) // self.max_frames))
        content: list[dict[str, object]] = [
            {"type": "image_url", "image_url": {"url": png_data_url(f.rgb)}} for f in frames[::step]
        ]
        options = "\n".join(f"{k}) {v}" for k, v in question.options.items())
        content.append(
            {"type": "text", "text": PROMPT.format(question=question.question, options=options)}
        )
        return {"model": self.model, "temperature": 0, "max_tokens": 8,
                "messages": [{"role": "user", "content": content}]}  # fmt: skip

    def answer(self, question: Question, frames: list[ViewerFrame]) -> Answer:
        body = json.dumps(self.request(question, frames)).encode()
        url = f"{self.base_url}/chat/completions"
        error = ""
        for attempt in range(1, self.retries + 2):
            t = time.monotonic()
            req = urllib.request.Request(url, data=body, method="POST", headers={
                "Content-Type": "application/json", "Authorization": f"Bearer {self.api_key}"})  # fmt: skip
            try:
                with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                    reply = json.loads(resp.read())["choices"][0]["message"]["content"] or ""
            except (
                urllib.error.URLError,
                TimeoutError,
                OSError,
                ValueError,
                KeyError,
                IndexError,
            ) as e:
                error = f"{url}: {type(e).__name__}: {e}"
                continue
            ms = (time.monotonic() - t) * 1000
            letter = parse_letter(str(reply), sorted(question.options))
            if letter is None:
                return Answer(None, raw=str(reply), error="the reply is not an option letter",
                              latency_ms=ms, attempts=attempt)  # fmt: skip
            return Answer(letter, raw=str(reply), latency_ms=ms, attempts=attempt)
        return Answer(None, error=error, attempts=self.retries + 1)
