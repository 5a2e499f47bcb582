"""System tests: real namespaces, links, emulator processes. Root only."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed.net.ledger import Ledger
from testbed.net.nsenter import NETNS_DIR

pytestmark = pytest.mark.system


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    if os.geteuid() != 0:
        skip = pytest.mark.skip(reason="system tests need root (network namespaces)")
        for item in items:
            if "tests/system" in str(item.fspath):
                item.add_marker(skip)


def namespaces_of(run: str) -> list[str]:
    if not os.path.isdir(NETNS_DIR):
        return []
    return [n for n in os.listdir(NETNS_DIR) if n.startswith(f"{run}-")]


@pytest.fixture
def run() -> Iterator[str]:
    """A unique run name; whatever it left is undone, then we check nothing is left."""
    name = "t" + secrets.token_hex(2)[:4]
    yield name
    Ledger(name).undo()
    Ledger(f"{name}--doctor").undo()
    assert namespaces_of(name) == [], "the test left namespaces behind"


def run_cli(
    *args: str, check: bool = False, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run the real CLI in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "testbed.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
    )


def stop_processes(procs: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each (by pid), then wait; kill what does not end within 30 s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


Start = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Start]:
    """Start `testbed worker` processes; each is stopped (by its pid) after the test."""
    started: list[subprocess.Popen[bytes]] = []

    def start(address: str, *args: str, wait: bool = True) -> subprocess.Popen[bytes]:
        log = tmp_path / f"worker{len(started)}.log"
        with open(log, "wb") as f:
            proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "worker", address, *args],
                                    stdout=f, stderr=subprocess.STDOUT)  # fmt: skip
        started.append(proc)
        deadline = time.monotonic() + 30
        while wait and "joining" not in log.read_text() and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            time.sleep(0.2)
        if wait:
            time.sleep(1.5)  # registered with the scheduler
        return proc

    yield start
    stop_processes(started)
