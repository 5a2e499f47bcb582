"""Controllers a user might write, in a file of their own (imported as
tests.system.stepper:Class by both stacks' endpoints)."""

from __future__ import annotations

from testbed.abr.base import Decision, Feedback


class StepController:
    """high_mbps, then low_mbps from at_s after its first event: a step to time."""

    period_ms = 100.0

    def __init__(self, initial_bps: float, fps: float, at_s: float = 4.0, high_mbps: float = 2.0,
                 low_mbps: float = 0.5) -> None:  # fmt: skip
        self.at_ms, self.high, self.low = at_s * 1000, high_mbps * 1e6, low_mbps * 1e6
        self.first_ms: float | None = None

    def update(self, feedback: Feedback) -> float:
        if self.first_ms is None:
            self.first_ms = feedback.now_ms
        return self.high if feedback.now_ms - self.first_ms < self.at_ms else self.low


class LimitController:
    """1 Mbps, at most 5 frames per second, half the resolution."""

    def __init__(self, initial_bps: float, fps: float) -> None:
        pass

    def update(self, feedback: Feedback) -> Decision:
        return Decision(1e6, max_fps=5.0, scale_down=2.0)


class NanController:
    """Nonsense after its third event: the driver must say so, never clamp it silently."""

    def __init__(self, initial_bps: float, fps: float) -> None:
        self.calls = 0

    def update(self, feedback: Feedback) -> float:
        self.calls += 1
        return 1e6 if self.calls < 3 else float("nan")
