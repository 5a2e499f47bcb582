"""The loss rate over the last few seconds, from the receiver reports' cumulative counters.

One report's `fraction lost` covers ~1 s: at 60 packets/s one loss more or less moves it by
1.7 points, which makes anything that acts on it (a controller, an FEC table) jumpy. Differences
of the cumulative counters over a window are steadier, at the price of reacting later.
"""

from __future__ import annotations

from collections import deque


class WindowedLoss:
    def __init__(self, window_ms: float) -> None:
        self.window_ms = window_ms
        self.reports: deque[tuple[float, int, int]] = deque()  # now_ms, lost, sent (cumulative)

    def add(self, now_ms: float, lost: int, sent: int) -> None:
        self.reports.append((now_ms, lost, sent))
        while len(self.reports) > 2 and self.reports[0][0] < now_ms - self.window_ms:
            self.reports.popleft()

    def pct(self) -> float | None:
        """Lost / sent between the oldest report in the window and the newest; None before two."""
        if len(self.reports) < 2:
            return None
        (_, lost0, sent0), (_, lost1, sent1) = self.reports[0], self.reports[-1]
        sent = sent1 - sent0
        return 100 * max(0, lost1 - lost0) / sent if sent > 0 else 0.0
