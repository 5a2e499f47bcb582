"""Shared fixtures. Ledgers of test runs live in a temporary state dir, apart from real runs."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _state_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="tb-test-state-") as d:
        os.environ["RTC_TESTBED_STATE_DIR"] = d
        yield Path(d)
