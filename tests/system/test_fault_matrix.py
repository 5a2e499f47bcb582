"""Fault drills (tests.system.drill): a process of a one-cell sweep killed at a moment; the cell
is whole or absent, the failure is said in words, nothing is left, a rerun completes it once.

CI runs one case per process kind and moment class; `pytest -m drill` runs the whole matrix
(every kind x SIGKILL/SIGTERM x setup/mid/teardown/writing, ~40 min)."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from testbed.rtc.chromium.browser import missing
from testbed.shaping.uml import uml_available
from tests.system.drill import matrix, run_case

# (kind, signal, moment, what the failure must say: the process and the signal when knowable)
CI_CASES = [
    ("client", signal.SIGKILL, "mid", "interrupted (signal 15 (SIGTERM))"),
    ("cell", signal.SIGKILL, "mid", "was killed by signal 9 (SIGKILL) during streaming"),
    ("cell", signal.SIGTERM, "setup", "interrupted (signal 15 (SIGTERM))"),
    ("emulator-uplink", signal.SIGKILL, "setup", "emulator path-uplink (pid {pid}) was killed by signal 9"),
    ("emulator-downlink", signal.SIGTERM, "teardown", "emulator path-downlink (pid {pid}) exited with code 143 (stopped by SIGTERM)"),
    ("sender", signal.SIGKILL, "setup", "sender endpoint (pid {pid}) was killed by signal 9"),
    ("receiver", signal.SIGTERM, "mid", "receiver endpoint (pid {pid}) was killed by signal 15"),
    ("tcpdump", signal.SIGKILL, "mid", "(tcpdump pid {pid}) was killed by signal 9 (SIGKILL) before the session ended"),
    ("router", signal.SIGKILL, "mid", "user-mode-linux router path (pid {pid}) was killed by signal 9"),
    ("browser", signal.SIGTERM, "mid", "the browser (pid {pid}) exited with code"),
]  # fmt: skip


def _needs(kind: str) -> None:
    if kind == "router" and not uml_available():
        pytest.skip("user-mode-linux is not installed")
    if kind == "browser" and missing():
        pytest.skip(str(missing()))


@pytest.mark.parametrize(("kind", "sig", "moment", "said"), CI_CASES,
                         ids=[f"{k}-{s.name}-{m}" for k, s, m, _ in CI_CASES])  # fmt: skip
def test_fault(
    run: str, tmp_path: Path, kind: str, sig: signal.Signals, moment: str, said: str
) -> None:
    _needs(kind)
    outcome = run_case(kind, sig, moment, tmp_path, run)
    assert outcome.killed.startswith("pid"), outcome
    pid = outcome.killed.split()[1]
    assert outcome.result.startswith("failed: "), outcome
    assert said.format(pid=pid) in outcome.result, outcome
    assert outcome.left == [], outcome
    assert outcome.rerun == "1 cell", outcome


@pytest.mark.drill
@pytest.mark.parametrize(("kind", "sig", "moment"), matrix(),
                         ids=[f"{k}-{s.name}-{m}" for k, s, m in matrix()])  # fmt: skip
def test_fault_matrix(
    run: str, tmp_path: Path, kind: str, sig: signal.Signals, moment: str
) -> None:
    """Every case keeps the promises; a victim already gone at its moment is no failure."""
    _needs(kind)
    outcome = run_case(kind, sig, moment, tmp_path, run)
    assert outcome.left == [] and outcome.rerun == "1 cell", outcome
    if outcome.killed.startswith("pid") and outcome.result != "cell whole":
        assert "pid" in outcome.result or "interrupted" in outcome.result, outcome
