"""Kernel state is owned: after kill -9, `testbed clean` leaves zero namespaces and processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from testbed.net.ledger import Ledger, process_start_ticks, state_root
from tests.conftest import ROOT
from tests.system.conftest import namespaces_of, run_cli

P2P = str(ROOT / "topologies" / "p2p.yaml")


def _emulator_pids(run: str) -> list[tuple[int, int]]:
    out = []
    for e in Ledger(run).entries():
        if e["kind"] == "process":
            pid, ticks = Path(e["pidfile"]).read_text().split()
            out.append((int(pid), int(ticks)))
    return out


def _alive(pid: int, ticks: int) -> bool:
    return process_start_ticks(pid) == ticks


def test_clean_after_kill_9_of_emulators(run: str) -> None:
    assert run_cli("up", P2P, "--name", run).returncode == 0
    pids = _emulator_pids(run)
    assert len(pids) == 2 and all(_alive(*p) for p in pids)
    for pid, _ in pids:
        os.kill(pid, signal.SIGKILL)
    res = run_cli("clean")
    assert res.returncode == 0, res.stderr
    assert namespaces_of(run) == []
    assert not any(_alive(*p) for p in pids)
    assert not (state_root() / run).exists()


def test_clean_after_kill_9_of_up_mid_build(run: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "testbed.cli", "up", P2P, "--name", run],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    ledger = Ledger(run)
    deadline = time.monotonic() + 20
    # wait until the build is under way: the first emulator is recorded
    while time.monotonic() < deadline:
        if any(e["kind"] == "process" for e in ledger.entries()):
            break
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    assert namespaces_of(run), "the build should have been under way"
    time.sleep(0.3)  # let an emulator that was starting finish writing its pidfile
    pids = []
    for e in ledger.entries():
        pidfile = Path(e.get("pidfile", "/nonexistent"))
        if e["kind"] == "process" and pidfile.exists():
            pid, ticks = pidfile.read_text().split()
            pids.append((int(pid), int(ticks)))
    res = run_cli("clean", "--name", run)
    assert res.returncode == 0, res.stderr
    assert namespaces_of(run) == []
    assert not any(_alive(*p) for p in pids)


def test_sigterm_during_up_undoes(run: str) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "testbed.cli", "up", P2P, "--name", run],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ledger = Ledger(run)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not ledger.entries():
        time.sleep(0.002)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    if proc.returncode == 0:  # it finished before the signal landed: take it down
        assert run_cli("down", "--name", run).returncode == 0
    else:
        assert "interrupted" in err
    assert namespaces_of(run) == []


def test_clean_touches_nothing_it_did_not_record(run: str) -> None:
    foreign = f"{run}-foreign"
    subprocess.run(["ip", "netns", "add", foreign], check=True)
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        assert run_cli("up", P2P, "--name", run).returncode == 0
        kept = run_cli("clean")
        assert kept.returncode == 0 and f"kept {run}: live" in kept.stdout
        assert len(namespaces_of(run)) == 4  # the live topology (3) and the foreign one
        assert run_cli("clean", "--name", run, "--force").returncode == 0
        assert namespaces_of(run) == [foreign]
        assert sleeper.poll() is None
    finally:
        sleeper.kill()
        subprocess.run(["ip", "netns", "del", foreign], check=True)


def test_ledger_records_before_creating(run: str) -> None:
    assert run_cli("up", P2P, "--name", run).returncode == 0
    kinds = [
        e["kind"] for e in json.loads((state_root() / run / "ledger.json").read_text())["entries"]
    ]
    assert kinds[:3] == ["netns", "netns", "netns"] and kinds.count("process") == 2
    assert run_cli("down", "--name", run).returncode == 0


def test_sigterm_during_stream_removes_everything(run: str, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "testbed.cli", "stream", P2P, "--name", run, "--duration-s", "30",
         "-o", str(tmp_path / "s")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    for line in proc.stdout:  # wait until it streams
        if "streaming" in line and "connected" in line:
            break
    time.sleep(1)
    pids = [(e["pid"], e["start_ticks"]) for e in Ledger(run).entries()
            if e["kind"] == "process" and e.get("pid")]  # fmt: skip
    assert len(pids) >= 4  # 2 emulators, 2 captures, 2 endpoints
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "interrupted (signal 15 (SIGTERM))" in err
    assert namespaces_of(run) == []
    assert not any(_alive(pid, ticks) for pid, ticks in pids)


def test_a_finished_run_leaves_no_state_behind(run: str, tmp_path: Path) -> None:
    """Logs elsewhere: after stop() the run's state directory (ledger, lock) is gone, and the
    name can be taken again at once."""
    from testbed.config import LinkDef, LinkSpec, TopologySpec
    from testbed.net.network import Network
    from testbed.shaping.backends import make_backend

    link = LinkDef("path", ("sender", "receiver"), LinkSpec(), LinkSpec())
    topo = TopologySpec("t", ("sender", "receiver"), (link,), seed=1)
    for _ in range(2):
        with Network(topo, make_backend("emu"), run=run, log_dir=tmp_path):
            assert (state_root() / run / "lock").exists()
        assert not (state_root() / run).exists()
    assert namespaces_of(run) == []


def test_clean_keeps_a_live_session_and_removes_it_once_its_owner_is_gone(
    run: str, tmp_path: Path
) -> None:
    """A colleague's `testbed clean` in another terminal leaves a running session alone."""
    cmd = [sys.executable, "-m", "testbed.cli", "stream", P2P, "--duration-s", "6",
           "--bitrate-mbps", "1", "-o", str(tmp_path / "out"), "--name", run]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ledger = Ledger(run)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(ledger.entries()) < 6:
        time.sleep(0.05)
    res = run_cli("clean")
    assert res.returncode == 0 and f"kept {run}: live, its owner, pid {proc.pid}" in res.stdout
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err  # the session finished undisturbed
    # the same run killed: its owner is gone, so clean removes it
    proc = subprocess.Popen([*cmd[:-4], "-o", str(tmp_path / "again"), "--name", run],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(ledger.entries()) < 6:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    res = run_cli("clean")
    assert res.returncode == 0 and "kept" not in res.stdout, res.stdout
    assert namespaces_of(run) == [] and not (state_root() / run).exists()


def test_clean_with_a_corrupt_ledger_says_which_file_and_removes_nothing(run: str) -> None:
    assert run_cli("up", P2P, "--name", run).returncode == 0
    ledger = Ledger(run)
    good = ledger.path.read_text()
    for pid, _ in _emulator_pids(run):  # not live any more: clean will try it
        os.kill(pid, signal.SIGKILL)
    ledger.path.write_text(good[: len(good) // 2])  # a torn, hand-edited or corrupted file
    res = run_cli("clean")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode == 1 and str(ledger.path) in lines[0] and "unreadable ledger" in lines[0]
    assert len(namespaces_of(run)) == 3  # nothing forgotten, nothing removed
    ledger.path.write_text(good)
    assert run_cli("clean", "--name", run).returncode == 0
    assert namespaces_of(run) == []


def test_force_needs_a_name() -> None:
    res = run_cli("clean", "--force")
    assert res.returncode == 2 and "--name" in res.stderr
