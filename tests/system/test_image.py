"""The testbed as an image: `make image` builds it with no registry; a container of it with
the documented capabilities runs `make run` (the quick sweep and its plot). On demand
(`make test-image`, `pytest -m image`): building it installs everything `make setup` does."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.net.ledger import Ledger

pytestmark = [
    pytest.mark.image,
    pytest.mark.skipif(os.environ.get("RTC_TESTBED_IN_IMAGE") == "1", reason="inside the image"),
]
IMAGE = "rtc-testbed/testbed:latest"
RUN_TIMEOUT_S = 1200


@pytest.fixture
def daemon_up() -> Iterator[None]:
    from testbed.net.containers import daemon

    started = not daemon.answers(daemon.address())
    if started:
        daemon.start()
    try:
        yield
    finally:
        if started:
            daemon.stop()


def test_the_image_builds_and_runs_make_run(daemon_up: None, run: str, tmp_path: Path) -> None:
    from testbed.net.containers import daemon, image
    from testbed.net.containers.hosts import LABEL_RUN

    if not image.current("testbed"):
        image.build("testbed", say=lambda line: print(line, file=sys.stderr))
    results = tmp_path / "results"
    results.mkdir()
    name = f"{run}-image"
    ledger = Ledger(run)  # owned like any container: `testbed clean` removes it after a crash
    ledger.lock()
    ledger.claim()
    ledger.record("container", name=name, docker_host=daemon.address(), run=run)
    try:
        c = daemon.connect()
        host_config = c.api.create_host_config(
            network_mode="none", cap_add=["ALL"], cap_drop=["SYS_RESOURCE"],
            security_opt=["seccomp=unconfined"], devices=["/dev/net/tun:/dev/net/tun:rwm"],
            shm_size="1g", binds={str(results): {"bind": "/opt/rtc-testbed-src/results",
                                                 "mode": "rw"}},
        )  # fmt: skip
        # what the CLI's --security-opt systempaths=unconfined means (the SDK has no word for it)
        host_config.update(MaskedPaths=[], ReadonlyPaths=[])
        made = c.api.create_container(IMAGE, ["make", "run"], name=name, host_config=host_config,
                                      volumes=["/opt/rtc-testbed-src/results"],
                                      labels={LABEL_RUN: run})  # fmt: skip
        c.api.start(made["Id"])
        ct = c.containers.get(made["Id"])
        status = ct.wait(timeout=RUN_TIMEOUT_S)
        logs = ct.logs().decode(errors="replace")
        assert status["StatusCode"] == 0, logs[-3000:]
        assert (results / "quick-fig3.pdf").stat().st_size > 10_000
        assert list((results / "quick" / "cells").glob("*/frames.parquet"))
    finally:
        ledger.undo()
        ledger.release_if_empty()
    assert not daemon.connect().containers.list(all=True, filters={"name": name})
