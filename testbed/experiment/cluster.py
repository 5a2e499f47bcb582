"""The client's side of a sweep on Dask: the cluster (embedded, or a running scheduler), which
workers can run the experiment's cells, and the cells' input files scattered once.

Embedded (the default): a scheduler and `jobs` workers in this process (one thread each), so a
cell is a Dask task either way and kill -9 of `testbed run` takes every cell with it (each gets
SIGTERM from the kernel and unwinds). Remote: `--cluster tls://HOST:8786 --certs DIR`, workers started on
each host with `testbed worker` (docs/sweeps.md); mutual TLS with the cluster's own CA
(testbed.experiment.tls), plain tcp:// only on loopback or when the user insists.

The embedded cluster listens on nothing: its scheduler and workers talk through Dask's inproc://
comm (queues in this process), and it has no dashboard.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.errors import UnavailableError
from testbed.experiment import worker as worker_side
from testbed.experiment.tls import TlsFiles

ALLOWED_FAILURES = 2  # a cell whose worker died this many times more is failed, with the reason
CONNECT_TIMEOUT_S = 10


@dataclass
class Cluster:
    client: Any  # distributed.Client
    address: str  # "embedded" or the scheduler's address
    workers: dict[str, dict[str, Any]]  # address -> worker_info()


# Dask starts an HTTP server in every scheduler and worker, dashboard or not: no routes, and
# loopback, so that while it exists it serves nothing to anyone
NO_HTTP: dict[str, list[str]] = {
    "distributed.scheduler.http.routes": [],
    "distributed.worker.http.routes": [],
}


def _stop_http(local: Any) -> None:
    """Close the embedded cluster's HTTP servers: then nothing of it listens on any interface
    (tested); Dask's own close() stops them again, harmlessly."""
    for node in (local.scheduler, *local.workers.values()):
        server = getattr(node, "http_server", None)
        if server is not None:
            server.stop()


def quiet() -> None:
    for name in ("distributed", "distributed.worker", "distributed.scheduler", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)


@contextlib.contextmanager
def open_cluster(
    address: str | None, jobs: int, run: str, work: Path, tls: TlsFiles | None = None
) -> Iterator[Cluster]:
    """The cluster the sweep's cells run on, closed (embedded) or left (remote) after. work:
    where the embedded cluster's cells are written (on the results' disk); tls: the client's
    certificates for a tls:// scheduler."""
    import dask
    from distributed import Client, LocalCluster

    quiet()
    if address is None:
        offer = worker_side.configure(run, worker_side.preflight(), work)
        if offer.problems:
            raise UnavailableError("this host cannot run cells: " + "; ".join(offer.problems))
        with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES,
                              "distributed.worker.daemon": False, **NO_HTTP}):  # fmt: skip
            local = LocalCluster(  # type: ignore[no-untyped-call]
                n_workers=jobs,
                threads_per_worker=1,
                processes=False,
                protocol="inproc://",  # no socket: nobody else can submit to it
                dashboard_address="127.0.0.1:0",
                worker_dashboard_address="127.0.0.1:0",
                resources=worker_side.resources(offer, 1),
                silence_logs=logging.ERROR,
            )
        _stop_http(local)
        try:
            with Client(local, set_as_default=True) as client:  # type: ignore[no-untyped-call]
                yield Cluster(client, "embedded", _workers(client, "embedded"))
        finally:
            local.close()
            worker_side.release_work()
        return
    settings = tls.config() if tls else {}
    try:
        with dask.config.set(settings):
            client = Client(  # type: ignore[no-untyped-call]
                address, timeout=CONNECT_TIMEOUT_S, set_as_default=True,
                security=tls.security() if tls else None,
            )  # fmt: skip
    except (OSError, TimeoutError, ValueError) as e:
        tls_hint = ("; with TLS, check that the scheduler's certificates and --certs come from "
                    "one `testbed cluster certs`") if tls else ""  # fmt: skip
        raise UnavailableError(
            f"cannot reach the Dask scheduler at {address} ({type(e).__name__}: {e}); start one "
            f"(`testbed scheduler`) and workers (`testbed worker ADDRESS`), or check the "
            f"address{tls_hint}"
        ) from None
    try:
        yield Cluster(client, address, _workers(client, address))
    finally:
        client.close()  # type: ignore[no-untyped-call]


def _workers(client: Any, address: str) -> dict[str, dict[str, Any]]:
    try:
        client.wait_for_workers(1, timeout=CONNECT_TIMEOUT_S)
    except TimeoutError:
        raise UnavailableError(
            f"no worker has joined the scheduler at {address}; start `testbed worker {address}` "
            "on a host (as root)"
        ) from None
    info: dict[str, dict[str, Any]] = client.run(worker_side.worker_info)
    return info


def able_workers(cluster: Cluster, need: dict[str, float]) -> list[str]:
    """The workers that offer everything a cell needs, or an error that says who offers what."""
    able = [a for a, w in cluster.workers.items()
            if all(k == "cell" or k in w["capabilities"] for k in need)]  # fmt: skip
    if able:
        return able
    wanted = ", ".join(k for k in need if k != "cell")
    offered = "; ".join(f"{w['host']['name']} ({a}): {', '.join(w['capabilities']) or 'nothing'}"
                        for a, w in cluster.workers.items())  # fmt: skip
    raise UnavailableError(
        f"no worker of the cluster {cluster.address} can run these cells: they need {wanted}; "
        f"the workers offer {offered}"
    )


def scatter_inputs(cluster: Cluster, inputs: dict[str, str]) -> dict[str, Any]:
    """sha256 -> a future of the file's bytes (inputs: path -> sha256, hashed when the
    experiment loaded), sent to the cluster once: each task that needs one gets it from there,
    and a worker keeps a copy in its content-addressed cache."""
    import hashlib

    out: dict[str, Any] = {}
    for path, sha in inputs.items():
        with open(path, "rb") as f:
            data = f.read()
        if hashlib.sha256(data).hexdigest() != sha:
            raise UnavailableError(f"{path} changed while the sweep was starting; rerun")
        if sha not in out:
            out[sha] = cluster.client.scatter(data, hash=False)
    return out
