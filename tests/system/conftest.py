"""System tests: real namespaces, links, emulator processes. Root only."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Iterator

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
