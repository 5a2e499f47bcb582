"""Runs a controller safely: a controller that raises, or returns a negative, zero, NaN or
infinite bitrate, leaves the last good target in place; the error is logged once, said in
words (the controller, the event, the value) and counted. Never a silent clamp: the floor a
source cannot go under is applied after, and recorded as what was applied."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

from testbed.abr.base import Controller, Decision, Feedback

log = logging.getLogger(__name__)


@dataclass
class AbrDriver:
    controller: Controller
    target_bps: float
    floor_bps: float = 0.0  # the source's smallest possible rate (synthetic: 16-byte frames)
    name: str = "controller"
    # now_ms, feedback kind, target, and what the event carried: estimate, rtt, loss, its age
    events: list[Event] = field(default_factory=list)
    errors: int = 0
    first_error: str | None = None
    max_fps: float | None = None  # the controller's frame-rate limit (a Decision's)
    scale_down: float | None = None  # its resolution divisor

    def feed(self, feedback: Feedback) -> float:
        try:
            answer: Any = self.controller.update(feedback)
            value = answer.bitrate_bps if isinstance(answer, Decision) else answer
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ValueError(f"returned {value!r}, not a positive finite bitrate")
            if isinstance(answer, Decision):
                _check_limits(answer)
                self.max_fps, self.scale_down = answer.max_fps, answer.scale_down
        except Exception as e:  # a user's controller: keep streaming, record what went wrong
            self.errors += 1
            if self.first_error is None:
                self.first_error = (f"{self.name} at a {feedback.kind} event "
                                    f"({feedback.now_ms:.0f} ms): {type(e).__name__}: {e}")  # fmt: skip
                log.error("ABR controller failed (%s); keeping %.0f bps", self.first_error,
                          self.target_bps)  # fmt: skip
        else:
            self.target_bps = max(self.floor_bps, float(value))
        frequent = feedback.kind in ("tick", "frame")  # logged only when a decision moves
        last = self.events[-1] if self.events else None
        moved = last is None or (last[2], last[7], last[8]) != (self.target_bps, self.max_fps,
                                                                 self.scale_down)  # fmt: skip
        if not frequent or moved:
            self.events.append((feedback.now_ms, feedback.kind, self.target_bps, feedback.remb_bps,
                                feedback.rtt_ms, feedback.loss_fraction, feedback.age_ms,
                                self.max_fps, self.scale_down))  # fmt: skip
        return self.target_bps


def _check_limits(d: Decision) -> None:
    for name, v, lo in (("max_fps", d.max_fps, 0.0), ("scale_down", d.scale_down, 1.0)):
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or v < lo \
                or (name == "max_fps" and v == 0):  # fmt: skip
            raise ValueError(f"returned {name} {v!r}; valid: " + ("> 0" if lo == 0 else ">= 1")
                             + " or None")  # fmt: skip


Event = tuple[float, str, float, float | None, float | None, float | None, float, float | None,
              float | None]  # fmt: skip
