"""Fault drills (tests.system.drill): a process of a one-cell sweep killed at a moment; the cell
is whole or absent, the failure is said in words, nothing is left, a rerun completes it once.

CI runs one case per process kind and moment class; `pytest -m drill` runs the whole matrix
(every kind x SIGKILL/SIGTERM x setup/mid/teardown/writing, ~40 min).

The interrupt drill (tests.system.interrupts): `testbed stream` / `testbed run` sent SIGINT or
SIGTERM at a phase exit 130 / 143, leave nothing and no partial output. CI runs one case per
command, signal and stack (container hosts: tests/system/test_docker.py); `pytest -m drill`
runs the whole matrix."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from testbed.rtc.chromium.browser import missing
from testbed.shaping.uml import uml_available, uml_why_not
from tests.system import interrupts
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
        pytest.skip(str(uml_why_not()))
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
    if kind in ("client", "cell"):  # interrupted or killed: nothing of the cell is kept
        assert outcome.kept == [], outcome
    else:  # a failure the cell saw: its files kept aside with the reason
        assert "1/failure.txt" in " ".join(outcome.kept), outcome
    if (kind, moment) == ("receiver", "mid"):
        assert any(k.endswith("receiver.stderr") for k in outcome.kept), outcome


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


INTERRUPT_CI_CASES = [
    ("stream", "aiortc", signal.SIGINT, "mid"),
    ("stream", "aiortc", signal.SIGTERM, "writing"),
    ("stream", "chromium", signal.SIGINT, "setup"),
    ("run", "aiortc", signal.SIGINT, "teardown"),
    ("run", "aiortc", signal.SIGTERM, "mid"),
    ("run", "chromium", signal.SIGTERM, "mid"),
    ("stream", "sessions", signal.SIGINT, "mid"),
]


def _check_interrupt(outcome: interrupts.Outcome) -> None:
    assert outcome.killed.startswith("pid"), outcome
    assert outcome.exit_code == outcome.expected_exit(), outcome
    assert outcome.output == "absent", outcome
    assert outcome.left == [], outcome
    assert outcome.command == "stream" or outcome.rerun == "1 cell", outcome


@pytest.mark.parametrize(("command", "variant", "sig", "moment"), INTERRUPT_CI_CASES,
                         ids=[interrupts.label(*c) for c in INTERRUPT_CI_CASES])  # fmt: skip
def test_interrupt(
    run: str, tmp_path: Path, command: str, variant: str, sig: signal.Signals, moment: str
) -> None:
    _needs("browser" if variant in ("chromium", "sessions") else command)
    _check_interrupt(interrupts.run_case(command, variant, sig, moment, tmp_path, run))


@pytest.mark.drill
@pytest.mark.parametrize(("command", "variant", "sig", "moment"),
                         interrupts.matrix(("aiortc", "chromium")),
                         ids=[interrupts.label(*c) for c in interrupts.matrix(("aiortc", "chromium"))])  # fmt: skip
def test_interrupt_matrix(
    run: str, tmp_path: Path, command: str, variant: str, sig: signal.Signals, moment: str
) -> None:
    """Every case keeps the promises (a moment that passed unseen is no failure)."""
    _needs("browser" if variant in ("chromium", "sessions") else command)
    outcome = interrupts.run_case(command, variant, sig, moment, tmp_path, run)
    assert outcome.ok(), outcome
