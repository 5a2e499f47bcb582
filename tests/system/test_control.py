"""Controllers on both stacks, with real endpoints and browsers: a user's controller class from
a file steps the bitrate and the wire follows within a stated time; frame-rate and resolution
limits reach the encoder; GCC under a cap stays under it; nonsense is said in words."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from testbed.config import load_topology
from testbed.rtc.capture import read_pcap
from testbed.rtc.chromium.browser import missing
from testbed.rtc.record import EndpointRecord
from testbed.rtc.session import run_stream
from testbed.rtc.spec import parse_stream
from testbed.shaping.backends import make_backend
from tests.conftest import ROOT
from tests.system.conftest import namespaces_of, run_cli

P2P = ROOT / "topologies" / "p2p.yaml"
no_chromium = pytest.mark.skipif(missing() is not None, reason=str(missing()))
STACKS = ["aiortc", pytest.param("chromium", marks=no_chromium)]
STEP_WITHIN_S = 2.0  # from the decision to the wire under 1.5x the new rate (a 250 ms window)
HIGH, LOW = 1.0, 0.25  # Mbps: what the moving pattern's encoders reach, and a quarter of it


def cell(run: str, out: Path, **stream: object) -> pd.DataFrame:
    spec = parse_stream({"source": "video", "video": "builtin:document", "bitrate_mbps": 2.0,
                         "duration_s": 8.0, **stream}, "test")  # fmt: skip
    result = run_stream(load_topology(P2P), spec, out, make_backend("emu"), "test", run=run,
                        seed=3)  # fmt: skip
    assert namespaces_of(run) == []
    return result.frames


def wire_mbps(out: Path, bin_s: float) -> pd.Series:
    """RTP bits the sender put on its wire (media, RTX, padding, FEC), per bin, in Mbps."""
    rows = [r for r in read_pcap(out / "sender.pcap") if r[4] == "rtp"]
    t = np.array([r[0] for r in rows]) / 1e9
    size = np.array([r[3] for r in rows])
    bins = ((t - t.min()) // bin_s).astype(int)
    return pd.Series(size).groupby(bins).sum() * 8 / bin_s / 1e6


@pytest.mark.parametrize("stack", STACKS)
def test_a_users_controller_steps_the_wire_on_both_stacks(
    run: str, tmp_path: Path, stack: str
) -> None:
    frames = cell(run, tmp_path, stack=stack, abr="tests.system.stepper:StepController",
                  abr_params={"high_mbps": HIGH, "low_mbps": LOW}, bitrate_mbps=HIGH,
                  video=None)  # the moving pattern: an encoder that needs its bitrate  # fmt: skip
    control = pd.read_parquet(tmp_path / "controller.parquet")
    step = control[control.target_bps == LOW * 1e6].t_ns.min()
    assert control.target_bps.iloc[0] == HIGH * 1e6 and pd.notna(step)
    if stack == "chromium":  # the browser's own answer, read back
        assert (control[control.target_bps == LOW * 1e6].stack_bps == LOW * 1e6).all()
    offset = json.loads((tmp_path / "cell.json").read_text())["clock_offset_real_minus_mono_ns"]
    rows = [r for r in read_pcap(tmp_path / "sender.pcap") if r[4] == "rtp"]
    t = (np.array([r[0] for r in rows]) - offset - step) / 1e9  # seconds after the decision
    size = np.array([r[3] for r in rows])
    before = size[(t > -2) & (t < 0)].sum() * 8 / 2 / 1e6
    assert before > 0.6 * HIGH, f"{before:.2f} Mbps before the step"
    windows = [
        size[(t >= a) & (t < a + 0.25)].sum() * 8 / 0.25 / 1e6 for a in np.arange(0, 3.5, 0.25)
    ]
    under = next((i * 0.25 for i, w in enumerate(windows) if w < 1.5 * LOW), None)
    assert under is not None and under <= STEP_WITHIN_S, [round(w, 2) for w in windows]
    assert (frames.status == "complete").mean() > 0.95


@pytest.mark.parametrize("stack", STACKS)
def test_send_fps_two_gives_two_frames_a_second(run: str, tmp_path: Path, stack: str) -> None:
    frames = cell(run, tmp_path, stack=stack, send_fps=2, bitrate_mbps=0.5)
    sent = frames.dropna(subset=["sent_first_ns"])
    secs = ((sent.sent_first_ns - sent.sent_first_ns.min()) // 1e9).astype(int)
    per_s = secs.value_counts().sort_index().iloc[1:-1]  # whole seconds
    assert len(per_s) >= 5 and per_s.between(1, 3).all() and abs(per_s.mean() - 2) <= 0.5, per_s


@no_chromium
def test_frame_rate_and_resolution_limits_reach_libwebrtc(run: str, tmp_path: Path) -> None:
    frames = cell(run, tmp_path, stack="chromium", abr="tests.system.stepper:LimitController")
    control = pd.read_parquet(tmp_path / "controller.parquet")
    last = control.iloc[-1]
    assert (last.max_fps, last.scale_down, last.stack_fps, last.stack_scale) == (5, 2, 5, 2)
    sent = frames.dropna(subset=["sent_first_ns"])
    late = sent[sent.sent_first_ns > sent.sent_first_ns.min() + 2e9]
    fps = len(late) / ((late.sent_first_ns.max() - late.sent_first_ns.min()) / 1e9)
    assert 3.5 <= fps <= 6.5, fps


@no_chromium
def test_gcc_under_a_cap_never_exceeds_it(run: str, tmp_path: Path) -> None:
    cell(run, tmp_path, stack="chromium", abr="gcc", abr_params={"cap_mbps": 0.8}, duration_s=10.0)
    rates = EndpointRecord.read(tmp_path, "sender")["rates"]
    assert rates.target_bps.max() <= 0.8e6  # the encoder's target, as libwebrtc reports it
    per_s = wire_mbps(tmp_path, 1.0).iloc[1:-1]  # whole seconds, the first (probing) left out
    # on the wire (IP bytes: headers, RTX and padding included) the encoder's output overshoots
    # its target in single seconds (measured: up to 1.2x); on average it stays under
    assert per_s.mean() <= 0.8 * 1.1 and per_s.max() <= 0.8 * 1.3, per_s.round(2).tolist()


@pytest.mark.parametrize("stack", STACKS)
def test_a_controller_returning_nonsense_is_said_in_words(
    run: str, tmp_path: Path, stack: str
) -> None:
    frames = cell(run, tmp_path, stack=stack, abr="tests.system.stepper:NanController",
                  duration_s=4.0)  # fmt: skip
    abr = json.loads((tmp_path / "cell.json").read_text())["abr"]
    assert abr["errors"] > 0 and "NanController at a" in abr["first_error"], abr
    assert "nan" in abr["first_error"] and abr["final_target_bps"] == 1e6
    assert (frames.status == "complete").mean() > 0.9


@pytest.mark.parametrize(
    ("sets", "words"),
    [
        (["abr=accuracy_cap"], "stream.abr_params"),
        (["abr=accuracy_cap", "abr_params={curve: /no/such.csv}"], "stream.abr_params.curve: /no/such.csv: cannot be read"),
        (["abr=tests.system.stepper:NoSuch"], "stream.abr"),
        (["abr=cap", "abr_params={cap_mbps: -1}"], "need cap_mbps > 0"),
    ],
)  # fmt: skip
def test_bad_controllers_are_one_line_exit_2_before_anything(
    run: str, tmp_path: Path, sets: list[str], words: str
) -> None:
    args = [a for s in sets for a in ("--stream-set", s)]
    res = run_cli("stream", str(P2P), *args, "-o", str(tmp_path / "o"), "--name", run)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 2 and len(lines) == 1 and words in lines[0], res.stderr
    assert namespaces_of(run) == [] and not (tmp_path / "o").exists()
