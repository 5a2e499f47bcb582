"""The built-in controllers: fixed, remb, budget, and what AI-viewer work compares: a cap over
the stack's estimate, a margin below it, and the accuracy-capped controller.

"The stack's estimate" is the `remb` event: aiortc's receiver estimate (REMB), Chromium's
send-side estimate (GCC's availableOutgoingBitrate, read from getStats)."""

from __future__ import annotations

import math

from testbed.abr.base import Feedback
from testbed.abr.curve import accuracy_at, lowest_reaching, read_curve
from testbed.models.latency import LinkModelInput, latency_quantile_ms
from testbed.models.loss import WindowedLoss


class FixedController:
    """The configured bitrate, whatever happens (the testbed's default)."""

    def __init__(self, initial_bps: float, fps: float) -> None:
        self.target = initial_bps

    def update(self, feedback: Feedback) -> float:
        return self.target


class RembController:
    """Follow the receiver's estimate (aiortc's REMB), as aiortc does, minus its VP8 clamp."""

    def __init__(
        self, initial_bps: float, fps: float, min_mbps: float = 0.05, max_mbps: float = 1000.0
    ) -> None:
        if not 0 < min_mbps <= max_mbps:
            raise ValueError("need 0 < min_mbps <= max_mbps")
        self.lo, self.hi = min_mbps * 1e6, max_mbps * 1e6
        self.target = initial_bps

    def update(self, feedback: Feedback) -> float:
        if feedback.kind == "remb" and feedback.remb_bps:
            self.target = min(self.hi, max(self.lo, feedback.remb_bps))
        return self.target


class BudgetController:
    """The paper's idea as a controller: stay in the yellow region.

    On every receiver report it takes the loss rate over the last `window_s` (lost / sent, from
    the cumulative counters, floored at loss_floor_pct) and the RTT, and picks the highest
    bitrate on a ladder from min_mbps to the cap whose predicted frame latency at `quantile`
    (testbed.models.latency: one-way delay = RTT/2, serialization at the link rate, one RTT plus
    the detection gap per repair round) is within budget_ms. The cap is the receiver's estimate
    (REMB) or link_mbps x headroom if the link rate is given; the model's link rate is link_mbps,
    else the REMB estimate, else the current target / headroom.
    """

    def __init__(
        self,
        initial_bps: float,
        fps: float,
        budget_ms: float = 68.0,
        quantile: float = 0.95,
        min_mbps: float = 0.1,
        max_mbps: float = 100.0,
        link_mbps: float | None = None,
        headroom: float = 0.85,
        window_s: float = 5.0,
        loss_floor_pct: float = 0.0,
    ) -> None:
        if (
            budget_ms <= 0
            or not 0 < quantile < 1
            or not 0 < min_mbps <= max_mbps
            or not 0 < headroom <= 1
        ):
            raise ValueError(
                "need budget_ms > 0, 0 < quantile < 1, 0 < min_mbps <= max_mbps, 0 < headroom <= 1"
            )
        self.fps = fps
        self.budget_ms, self.quantile = budget_ms, quantile
        self.lo, self.hi = min_mbps, max_mbps
        self.link_mbps, self.headroom = link_mbps, headroom
        self.loss, self.loss_floor = WindowedLoss(window_s * 1000), loss_floor_pct
        self.target = initial_bps
        self.remb_mbps: float | None = None
        self.rtt_ms: float | None = None
        self.ladder = [min_mbps * (max_mbps / min_mbps) ** (i / 80) for i in range(81)]
        self.last_prediction_ms: float | None = None
        self.loss_pct = loss_floor_pct

    def update(self, feedback: Feedback) -> float:
        if feedback.kind == "remb" and feedback.remb_bps:
            self.remb_mbps = feedback.remb_bps / 1e6
        if feedback.kind != "report":
            return self.target
        if feedback.rtt_ms is not None:
            self.rtt_ms = feedback.rtt_ms
        if feedback.packets_lost is not None and feedback.packets_sent is not None:
            self.loss.add(feedback.now_ms, feedback.packets_lost, feedback.packets_sent)
        measured = self.loss.pct()
        if self.rtt_ms is None or measured is None:
            return self.target
        self.loss_pct = max(self.loss_floor, measured)
        self.target = self._choose() * 1e6
        return self.target

    def _choose(self) -> float:
        assert self.rtt_ms is not None
        if self.link_mbps:
            rate, cap = self.link_mbps, self.link_mbps * self.headroom
        elif self.remb_mbps:
            rate, cap = self.remb_mbps, self.remb_mbps
        else:
            rate, cap = self.target / 1e6 / self.headroom, math.inf
        link = LinkModelInput(rate, self.rtt_ms / 2, self.rtt_ms / 2, min(self.loss_pct, 99.0))
        best = self.lo
        for mbps in self.ladder:
            if mbps > min(cap, self.hi):
                break
            predicted = latency_quantile_ms(link, mbps, self.fps, self.quantile)
            if predicted <= self.budget_ms:
                best = mbps
                self.last_prediction_ms = predicted
        return best


def _floor(min_mbps: float) -> float:
    if not min_mbps > 0:
        raise ValueError("need min_mbps > 0")
    return min_mbps * 1e6


class CapController:
    """The stack's estimate below a ceiling: min(estimate, cap_mbps) (before the first
    estimate: the starting bitrate, capped)."""

    def __init__(self, initial_bps: float, fps: float, cap_mbps: float,
                 min_mbps: float = 0.05) -> None:  # fmt: skip
        if not cap_mbps > 0:
            raise ValueError("need cap_mbps > 0")
        self.cap, self.lo = cap_mbps * 1e6, _floor(min_mbps)
        self.target = max(self.lo, min(initial_bps, self.cap))

    def update(self, feedback: Feedback) -> float:
        if feedback.kind == "remb" and feedback.remb_bps:
            self.target = max(self.lo, min(self.cap, feedback.remb_bps))
        return self.target


class MarginController:
    """A fixed margin below the stack's estimate: estimate - margin_mbps, at least min_mbps."""

    def __init__(self, initial_bps: float, fps: float, margin_mbps: float,
                 min_mbps: float = 0.05) -> None:  # fmt: skip
        if not margin_mbps >= 0:
            raise ValueError("need margin_mbps >= 0")
        self.margin, self.lo = margin_mbps * 1e6, _floor(min_mbps)
        self.target = initial_bps

    def update(self, feedback: Feedback) -> float:
        if feedback.kind == "remb" and feedback.remb_bps:
            self.target = max(self.lo, feedback.remb_bps - self.margin)
        return self.target


class AccuracyCapController:
    """Send no more than the AI viewer needs: the cap is the lowest bitrate at which the task's
    accuracy reaches `threshold` on a measured curve (testbed.abr.curve: the JSON of `testbed
    bench viewer --json` or the CSV of `testbed report --accuracy --csv`; rows of kind `roi`),
    interpolated. The target never exceeds the cap nor the stack's estimate; below the cap,
    while it already meets the threshold (its accuracy on the curve) it stays; otherwise it
    climbs toward the cap by climb_pct_per_s (multiplicative, GCC's 8%/s by default). A curve that never reaches the
    threshold caps at its most accurate bitrate (`reached` False in the summary)."""

    def __init__(self, initial_bps: float, fps: float, curve: str, threshold: float = 0.8,
                 roi: str = "uniform", climb_pct_per_s: float = 8.0,
                 min_mbps: float = 0.05) -> None:  # fmt: skip
        if not 0 < threshold <= 1 or not climb_pct_per_s > 0:
            raise ValueError("need 0 < threshold <= 1 and climb_pct_per_s > 0")
        self.curve = read_curve(curve, roi)
        self.threshold, self.climb = threshold, climb_pct_per_s / 100
        cap_mbps, self.reached = lowest_reaching(self.curve, threshold)
        self.lo = _floor(min_mbps)
        self.cap = max(self.lo, cap_mbps * 1e6)
        self.target = max(self.lo, initial_bps)
        self.estimate: float | None = None
        self.last_ms: float | None = None

    def update(self, feedback: Feedback) -> float:
        if feedback.kind == "remb" and feedback.remb_bps:
            self.estimate = feedback.remb_bps
        dt_s = 0.0 if self.last_ms is None else max(0.0, feedback.now_ms - self.last_ms) / 1000
        self.last_ms = feedback.now_ms
        if accuracy_at(self.curve, self.target / 1e6) < self.threshold:
            self.target = min(self.cap, max(self.target, self.target * (1 + self.climb) ** dt_s))
        self.target = min(self.target, self.cap)  # the cap is a ceiling, from the start
        if self.estimate is not None:
            self.target = min(self.target, self.estimate)
        self.target = max(self.lo, self.target)
        return self.target


class StepsController:
    """A square wave for step responses: levels_mbps in turn, each for every_s, from the first
    event on (`testbed bench reaction` times how the stack's output follows)."""

    period_ms = 50.0

    def __init__(self, initial_bps: float, fps: float, levels_mbps: tuple[float, ...] = (1.0, 0.25),
                 every_s: float = 3.0) -> None:  # fmt: skip
        levels = list(levels_mbps)
        if len(levels) < 2 or any(not x > 0 for x in levels) or not every_s > 0:
            raise ValueError("need two or more levels_mbps > 0 and every_s > 0")
        self.levels, self.every_ms = [x * 1e6 for x in levels], every_s * 1000
        self.first_ms: float | None = None

    def update(self, feedback: Feedback) -> float:
        if self.first_ms is None:
            self.first_ms = feedback.now_ms
        turn = int((feedback.now_ms - self.first_ms) // self.every_ms)
        return self.levels[turn % len(self.levels)]
