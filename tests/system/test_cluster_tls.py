"""A cluster only its owner can use: mutual TLS on real processes on loopback (the documented
`dask scheduler` command and `testbed scheduler`, `testbed worker`, `testbed run`), peers
without the CA's certificates refused by the scheduler, and an embedded cluster that listens
on nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from testbed.experiment.tls import make_certs
from tests.system.conftest import Start, run_cli, stop_processes
from tests.system.test_cluster import DASK
from tests.system.test_sweep import cells, experiment


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tls") / "certs"
    make_certs(folder)
    return folder


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A complete, valid set from another CA: what someone else on the network could have."""
    folder = tmp_path_factory.mktemp("tls") / "stranger"
    make_certs(folder)
    return folder


def _start_scheduler(argv: list[str], info: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([*argv, "--scheduler-file", str(info)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 30
    while not info.exists() and time.monotonic() < deadline:
        assert proc.poll() is None, f"the scheduler exited: {proc.returncode}"
        time.sleep(0.2)
    assert info.exists(), "the scheduler did not start"
    time.sleep(0.3)
    return proc


@pytest.fixture
def tls_scheduler(tmp_path: Path, certs: Path) -> Iterator[str]:
    """The scheduler exactly as docs/sweeps.md starts it with `dask scheduler`."""
    env = {**os.environ, "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "2",
           "DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "True"}  # fmt: skip
    proc = _start_scheduler(
        [str(DASK), "scheduler", "--protocol", "tls", "--tls-ca-file", str(certs / "ca.pem"),
         "--tls-cert", str(certs / "scheduler.pem"), "--tls-key", str(certs / "scheduler.pem"),
         "--host", "127.0.0.1", "--port", "0", "--no-dashboard"],
        tmp_path / "scheduler.json", env,
    )  # fmt: skip
    yield str(json.loads((tmp_path / "scheduler.json").read_text())["address"])
    stop_processes([proc])


def _workers_of(address: str, certs: Path) -> int:
    """How many workers the scheduler has, asked as a client holding the right certificate."""
    from distributed import Client

    from testbed.experiment.tls import check_certs

    with Client(address, security=check_certs(certs, "client").security(), timeout=10) as c:
        return len(c.scheduler_info()["workers"])


def test_a_sweep_over_mutual_tls_and_strangers_refused(
    run: str, tmp_path: Path, certs: Path, stranger: Path, tls_scheduler: str, workers: Start
) -> None:
    assert tls_scheduler.startswith("tls://127.0.0.1:")
    good = workers(tls_scheduler, "--certs", str(certs), "--name", f"t{run[1:4]}")
    assert _workers_of(tls_scheduler, certs) == 1
    # a worker holding another CA's certificate: the handshake fails, it never joins
    bad = subprocess.run([sys.executable, "-m", "testbed.cli", "worker", tls_scheduler, "--certs",
                          str(stranger), "--name", f"s{run[1:4]}"],
                         capture_output=True, text=True, timeout=90)  # fmt: skip
    assert bad.returncode == 2, bad.stderr
    assert "cannot reach the Dask scheduler" in bad.stderr, bad.stderr
    # a plain Dask worker with no certificate at all
    plain = subprocess.run([str(DASK), "worker", tls_scheduler, "--no-dashboard",
                            "--death-timeout", "5", "--nworkers", "1", "--nthreads", "1"],
                           capture_output=True, text=True, timeout=90)  # fmt: skip
    assert plain.returncode != 0
    assert _workers_of(tls_scheduler, certs) == 1  # still only ours
    exp = experiment(tmp_path, "[1]")
    # a client with another CA's certificate: refused, nothing written
    res = run_cli("run", str(exp), "-o", str(tmp_path / "x"), "--name", run, "--cluster",
                  tls_scheduler, "--certs", str(stranger), timeout=90)  # fmt: skip
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "TLS certificate does not match" in res.stderr, res.stderr
    assert not (tmp_path / "x").exists()
    # the owner's client: the sweep runs on the worker, over TLS
    out = tmp_path / "res"
    res = run_cli("run", str(exp), "-o", str(out), "--name", run, "--cluster", tls_scheduler,
                  "--certs", str(certs), timeout=300)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(cells(out)) == 2  # [1] x loss [0, 5]
    assert good.poll() is None  # the worker stays for the next run


def test_testbed_scheduler_and_plain_tcp_rules(
    run: str, tmp_path: Path, certs: Path, workers: Start
) -> None:
    proc = _start_scheduler([sys.executable, "-m", "testbed.cli", "scheduler", "--certs",
                             str(certs), "--host", "127.0.0.1", "--port", "0"],
                            tmp_path / "s.json", dict(os.environ))  # fmt: skip
    try:
        address = str(json.loads((tmp_path / "s.json").read_text())["address"])
        assert address.startswith("tls://")
        # nothing of it listens beyond loopback (its HTTP server is bound there, serving nothing)
        listening = [c.laddr for c in psutil.Process(proc.pid).net_connections("inet")
                     if c.status == psutil.CONN_LISTEN]  # fmt: skip
        assert listening and all(a.ip == "127.0.0.1" for a in listening), listening
        # plain tcp to a TLS scheduler: Dask refuses to speak it
        plain = run_cli("run", str(experiment(tmp_path, "[1]")), "-o", str(tmp_path / "p"),
                        "--name", run, "--cluster", address.replace("tls://", "tcp://"),
                        timeout=90)  # fmt: skip
        assert plain.returncode == 2 and not (tmp_path / "p").exists(), plain.stderr
    finally:
        stop_processes([proc])
    for args, said in (
        (["worker", "tcp://192.0.2.1:8786"], "refusing a plain tcp:// scheduler off this machine"),
        (["worker", "tls://192.0.2.1:8786"], "a tls:// scheduler needs the cluster's certificates"),
        (["run", str(experiment(tmp_path, "[1]")), "--cluster", "tcp://192.0.2.1:8786"],
         "refusing a plain tcp://"),
        (["scheduler"], "a scheduler takes the cluster's certificates"),
        (["worker", "tls://127.0.0.1:1", "--certs", str(tmp_path / "none")], "not a folder"),
    ):  # fmt: skip
        res = run_cli(*args, timeout=60)
        assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert said in res.stderr, res.stderr


def test_the_embedded_cluster_listens_on_nothing(run: str, tmp_path: Path) -> None:
    from testbed.experiment.cluster import open_cluster

    me = psutil.Process()
    before = {c.laddr for c in me.net_connections("all") if c.status == psutil.CONN_LISTEN}
    with open_cluster(None, 2, run[:4], tmp_path / "work") as cl:
        assert cl.client.scheduler.address.startswith("inproc://")
        assert cl.client.submit(sum, [1, 2]).result(timeout=30) == 3
        now = [c for c in me.net_connections("all")
               if c.status == psutil.CONN_LISTEN and c.laddr not in before]  # fmt: skip
        assert now == [], now
        unix = [c for c in me.net_connections("unix") if c.laddr]
        assert unix == [], unix
