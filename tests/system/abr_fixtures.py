"""Controllers for the tests, importable by dotted path from the sender process."""

from __future__ import annotations

from testbed.abr.base import Feedback


class Halving:
    """Half the initial bitrate from the start; raises on every report afterwards."""

    def __init__(self, initial_bps: float, fps: float) -> None:
        self.target = initial_bps / 2

    def update(self, feedback: Feedback) -> float:
        if feedback.kind == "report":
            raise RuntimeError("boom")
        return self.target


class Negative:
    def __init__(self, initial_bps: float, fps: float) -> None:
        pass

    def update(self, feedback: Feedback) -> float:
        return -1.0


class FrameLatencyProbe:
    """Drops to 1.5 Mbps once a `frame` event says a frame took 30-200 ms (its estimate)."""

    def __init__(self, initial_bps: float, fps: float) -> None:
        self.target = initial_bps

    def update(self, feedback: Feedback) -> float:
        latency = feedback.frame_latency_ms
        if feedback.kind == "frame" and latency is not None and 30 <= latency <= 200:
            self.target = 1.5e6
        return self.target
