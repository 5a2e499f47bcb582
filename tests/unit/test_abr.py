"""ABR controllers driven by lists of feedback events (no sockets)."""

from __future__ import annotations

import math
import sys
import types

import pytest

from testbed.abr.base import Feedback
from testbed.abr.builtin import BudgetController, FixedController, RembController
from testbed.abr.driver import AbrDriver
from testbed.abr.registry import make, resolve
from testbed.errors import ConfigError


def reports(loss_pct: float, rtt_ms: float, seconds: int, pps: int = 100) -> list[Feedback]:
    return [Feedback(now_ms=1000 * s, kind="report", rtt_ms=rtt_ms, packets_sent=pps * s,
                     packets_lost=round(pps * s * loss_pct / 100)) for s in range(1, seconds + 1)]  # fmt: skip


def test_fixed_and_remb() -> None:
    f = FixedController(4e6, 30)
    assert f.update(Feedback(0, "remb", remb_bps=1e6)) == 4e6
    r = RembController(4e6, 30)
    assert r.update(Feedback(0, "report")) == 4e6
    assert r.update(Feedback(1, "remb", remb_bps=7e6)) == 7e6  # above aiortc's 1.5 Mbps clamp
    assert r.update(Feedback(2, "remb", remb_bps=1.0)) == 0.05e6


def test_budget_stays_in_the_yellow_region() -> None:
    """No loss: as high as the link allows. 2% loss at RTT 60 ms: any repair misses 68 ms, so
    frames must be small enough that 95% see no loss: about 2 packets, ~0.6 Mbps at 30 fps."""
    clean = BudgetController(1e6, 30, link_mbps=10)
    for fb in reports(0.0, 60, 5):
        target = clean.update(fb)
    assert 7e6 < target <= 8.5e6
    lossy = BudgetController(4e6, 30, link_mbps=10)
    for fb in reports(2.0, 60, 5):
        target = lossy.update(fb)
    assert 0.3e6 < target < 0.7e6
    assert lossy.last_prediction_ms is not None and lossy.last_prediction_ms <= 68
    # a bigger budget buys a higher bitrate
    relaxed = BudgetController(4e6, 30, link_mbps=10, budget_ms=200)
    for fb in reports(2.0, 60, 5):
        relaxed_target = relaxed.update(fb)
    assert relaxed_target > 2 * target
    # before any RTT is known it keeps the initial bitrate
    assert (
        BudgetController(3e6, 30).update(Feedback(0, "report", packets_lost=0, packets_sent=10))
        == 3e6
    )


def test_driver_keeps_last_good_target() -> None:
    class Bad:
        def __init__(self) -> None:
            self.calls = 0

        def update(self, feedback: Feedback) -> float:
            self.calls += 1
            return [2e6, -1.0, math.nan, 1 / 0 if self.calls > 10 else 3e6][min(self.calls - 1, 3)]

    d = AbrDriver(Bad(), 1e6)
    assert d.feed(Feedback(0, "tick")) == 2e6
    assert (
        d.feed(Feedback(1, "tick")) == 2e6
        and d.errors == 1
        and "returned -1.0" in (d.first_error or "")
    )
    assert d.feed(Feedback(2, "tick")) == 2e6 and d.errors == 2
    assert d.feed(Feedback(3, "tick")) == 3e6


def test_registry() -> None:
    assert resolve("budget", "x") is BudgetController
    with pytest.raises(ConfigError, match="known: accuracy_cap, budget, cap, fixed, margin, remb"):
        resolve("bola", "x.yaml")
    with pytest.raises(ConfigError, match="does not resolve"):
        resolve("nowhere.at_all:Thing", "x.yaml")
    with pytest.raises(ConfigError, match=r"stream\.abr_params"):
        make("budget", {"budget": 5}, 1e6, 30)
    with pytest.raises(ConfigError, match="budget_ms > 0"):
        make("budget", {"budget_ms": -5}, 1e6, 30)
    mod = types.ModuleType("my_abr_mod")

    class Halver:
        def __init__(self, initial_bps: float, fps: float, factor: float = 2) -> None:
            self.t = initial_bps / factor

        def update(self, feedback: Feedback) -> float:
            return self.t

    mod.Halver = Halver  # type: ignore[attr-defined]
    sys.modules["my_abr_mod"] = mod
    assert make("my_abr_mod:Halver", {"factor": 4}, 4e6, 30).update(Feedback(0, "tick")) == 1e6


def test_frame_assembler_completes_frames_in_any_order() -> None:
    from testbed.abr.framefeedback import FrameAssembler, latency_estimate_ms, pack_app, unpack_app

    fa = FrameAssembler()
    fa.on_packet(65533, 0, True, 0)  # the end of a frame before: its marker sets the start
    # frame 3000: seqs 65534, 65535, 0 (wraps); 65535 lost at first, then retransmitted
    fa.on_packet(65534, 3000, False, 10)
    fa.on_packet(0, 3000, True, 12)
    assert fa.take() == []
    fa.on_packet(65535, 3000, False, 90)
    assert fa.take() == [(3000, 10, 90)]
    # the next frame's marker arrives before the previous frame's: it waits for it
    fa.on_packet(2, 6000, True, 100)  # seq 1 (first packet of 6000) still missing
    fa.on_packet(1, 6000, False, 101)
    assert fa.take() == [(6000, 100, 101)]
    app = pack_app(1234, [(3000, 0, 90_000_000)], now_ns=100_000_000)
    assert unpack_app(app) == [(3000, 90_000, 10_000)]
    assert unpack_app(b"\x80\xc9" + bytes(30)) is None
    # report at 200 ms, completed 10 ms before it was sent, RTT 60: completed at 160 ms
    assert latency_estimate_ms(200_000_000, 10_000, 60.0, 130_000_000) == 30.0
