"""FEC and ABR in real aiortc sessions over the emulated link."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from testbed.rtc.record import EndpointRecord
from tests.system.conftest import namespaces_of, run_cli
from tests.system.test_stream import P2P, session

LINK = ["uplink.rate_mbps=10", "uplink.delay_ms=30", "downlink.delay_ms=30"]


def test_rs_fec_rebuilds_losses_within_one_way_delay(run: str, tmp_path: Path) -> None:
    frames = session(run, tmp_path, [*LINK, "uplink.loss_pct=5"], bitrate_mbps=2.0,
                     duration_s=6.0, fec={"scheme": "rs", "overhead": 0.5})  # fmt: skip
    hit = frames[frames.packets_lost_first_try > 0]
    assert len(hit) > 5
    by_fec = frames[frames.completed_by == "fec"]
    assert len(by_fec) >= 0.7 * len(hit)
    # the receiver's own log of rebuilt packets agrees with what the wire says FEC repaired
    assert (by_fec.fec_recovered == by_fec.packets_lost_first_try).all()
    # FEC repairs without a round trip: no NACK, no RTX, latency far below delay + RTT
    assert by_fec.nacks.sum() == 0 and by_fec.retransmissions.sum() == 0
    assert by_fec.latency_ns.max() < 30e6 + 60e6
    # 2 Mbps / 30 fps = 7 packets; 50% -> 4 repair packets per frame, on the wire
    assert (frames[frames.status != "not_sent"].fec_packets == 4).all()
    assert frames.fec_bytes.sum() > 0.5 * frames.wire_bytes.sum()
    assert EndpointRecord.read(tmp_path, "receiver").info["fec_nacks_saved"] > 0


def test_xor_fec_without_nack(run: str, tmp_path: Path) -> None:
    frames = session(run, tmp_path, [*LINK, "uplink.loss_pct=5"], bitrate_mbps=2.0, duration_s=5.0,
                     nack="off", fec={"scheme": "xor", "group_packets": 4})  # fmt: skip
    assert frames.retransmissions.sum() == 0
    assert (frames.completed_by == "fec").sum() > 3
    # one parity per group: a frame that lost two packets of one group stays incomplete
    assert set(frames.completed_by) <= {"media", "fec", "none"}


def test_budget_controller_drops_the_bitrate_under_loss(run: str, tmp_path: Path) -> None:
    frames = session(run, tmp_path, [*LINK, "uplink.loss_pct=5"], bitrate_mbps=4.0,
                     duration_s=8.0, abr="budget")  # fmt: skip
    first, last = frames.iloc[0], frames.iloc[-1]
    assert first.target_bitrate_bps == 4e6
    assert last.target_bitrate_bps < 1e6  # 5% loss at RTT 60 ms: about one packet per frame
    # the synthetic source makes exactly the target
    assert last.size_bytes == pytest.approx(last.target_bitrate_bps / 8 / 30, abs=1)
    ts = pd.read_csv(tmp_path / "timeseries.csv")
    assert ts.target_mbps.iloc[0] > 3 and ts.target_mbps.iloc[-1] < 1
    cell = json.loads((tmp_path / "cell.json").read_text())
    assert cell["abr"]["controller"] == "budget" and cell["abr"]["errors"] == 0


@pytest.mark.parametrize(("controller", "target"), [("Halving", 1e6), ("Negative", 2e6)])
def test_failing_controller_keeps_the_last_good_target(
    run: str, tmp_path: Path, controller: str, target: float
) -> None:
    frames = session(run, tmp_path, LINK, bitrate_mbps=2.0, duration_s=4.0,
                     abr=f"tests.system.abr_fixtures:{controller}")  # fmt: skip
    assert (frames.status == "complete").all()
    assert frames.target_bitrate_bps.iloc[-1] == target
    abr = json.loads((tmp_path / "cell.json").read_text())["abr"]
    assert abr["errors"] > 0 and abr["first_error"]


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            ["abr=bola"],
            "stream.abr: 'bola' is unknown; known: accuracy_cap, budget, cap, fixed, margin, remb, steps",
        ),
        (["abr=budget", "abr_params={budget: 5}"], "stream.abr_params"),
        (["fec={scheme: ldpc}"], "stream.fec.scheme: 'ldpc' is unknown; valid: none, xor, rs"),
        (
            ["fec={scheme: rs, overhead: 5}"],
            "stream.fec.overhead: 5 is out of range; valid: 0 to 4",
        ),
    ],
)
def test_variant_bad_input(run: str, tmp_path: Path, sets: list[str], message: str) -> None:
    args = [a for s in sets for a in ("--stream-set", s)]
    res = run_cli("stream", str(P2P), "--name", run, "-o", str(tmp_path / "o"), *args)
    assert res.returncode == 2, res.stdout + res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and message in res.stderr, res.stderr
    assert namespaces_of(run) == [] and not (tmp_path / "o").exists()


def test_frame_feedback_reaches_the_controller_with_honest_latency(
    run: str, tmp_path: Path
) -> None:
    """The receiver reports completed frames (RTCP APP); the sender's estimate (RTT/2 each
    way, no shared clock) agrees with the latency measured on the wire."""
    frames = session(run, tmp_path, [*LINK, "uplink.loss_pct=2"], bitrate_mbps=2.0, duration_s=6.0,
                     abr="tests.system.abr_fixtures:FrameLatencyProbe")  # fmt: skip
    assert frames.target_bitrate_bps.iloc[-1] == 1.5e6
    reported = EndpointRecord.read(tmp_path, "sender")["estimates"]
    reported = reported.rename(columns={"latency_ms": "est_ms"})
    assert len(reported) > 0.8 * len(frames)  # every completed frame but the first is reported
    # no estimate before the first receiver report that answers a sender report: both are sent
    # every 0.5-1.5 s, so it comes within ~3 s (aiortc's own RTT: seen unknown for 4.6 s)
    est = reported.dropna()
    assert len(est) > 0.35 * len(frames)
    both = est.merge(frames[["rtp_ts", "latency_ns"]].dropna(), on="rtp_ts")
    error = (both.est_ms - both.latency_ns.astype(float) / 1e6).abs()
    assert error.median() < 3.0, error.describe()
    assert EndpointRecord.read(tmp_path, "receiver").info["frame_feedback_reports"] > 30
    assert EndpointRecord.read(tmp_path, "sender").info["rtt_samples"] >= 2


def test_fec_table_policy_follows_the_reported_loss(run: str, tmp_path: Path) -> None:
    """No loss heard yet: no repair. Once receiver reports say ~10% (the path's loss: rebuilt
    packets do not count as received), the table protects every frame."""
    frames = session(run, tmp_path, [*LINK, "uplink.loss_pct=10"], bitrate_mbps=2.0, duration_s=5.0,
                     fec={"scheme": "rs", "policy": "table"})  # fmt: skip
    sent = frames[frames.status != "not_sent"]
    assert (sent.head(10).fec_packets == 0).all()
    late = sent.tail(60)
    assert (late.fec_packets >= 2).all()  # 7 packets at 10% loss: the table asks for 3-4
    assert (late.completed_by == "fec").sum() > (late.completed_by == "rtx").sum()
