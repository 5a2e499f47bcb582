"""`testbed worker SCHEDULER`: this host runs sweep cells for a Dask scheduler."""

from __future__ import annotations

import asyncio
import os
import platform
import re
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from testbed.cli.common import fail
from testbed.errors import ConfigError, TestbedError, UnavailableError

if TYPE_CHECKING:
    from testbed.experiment.tls import TlsFiles

CERTS_HELP = "the cluster's certificates (`testbed cluster certs DIR`) for a tls:// scheduler"
INSECURE_HELP = ("allow a plain tcp:// scheduler off this machine (unauthenticated: only on a "
                 "network only you use)")  # fmt: skip

ADDRESS_RE = re.compile(r"^((tcp|tls)://)?[A-Za-z0-9.\-\[\]:]+:\d{1,5}$")


def check_address(option: str, address: str) -> str:
    """A scheduler address as Dask takes it: tls://HOST:PORT, tcp://HOST:PORT (or HOST:PORT)."""
    if not ADDRESS_RE.match(address):
        raise ConfigError(option, address, "not a scheduler address; valid: tls://HOST:PORT "
                          "(with --certs DIR), or tcp://HOST:PORT")  # fmt: skip
    return address


def _names(option: str, text: str | None, valid: tuple[str, ...]) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(n for n in text.split(",") if n)
    for n in names:
        if n not in valid:
            raise ConfigError(option, n, f"unknown; valid: {', '.join(valid)}")
    return names


@click.command()
@click.argument("scheduler")
@click.option(
    "--cores-per-cell",
    type=int,
    default=None,
    help="run a cell per N cores [one cell at a time on this host, for timing-faithful cells]",
)
@click.option("--backends", default=None, help="offer only these link backends: emu,netem-uml,...")
@click.option("--stacks", default=None, help="offer only these stacks: aiortc,chromium")
@click.option("--certs", type=click.Path(path_type=Path), default=None, help=CERTS_HELP)
@click.option("--insecure", is_flag=True, help=INSECURE_HELP)
@click.option(
    "--name",
    default="wk",
    show_default=True,
    help="prefix of the run names of the cells run here (1-4 letters/digits; a number is added)",
)
def worker(
    scheduler: str,
    cores_per_cell: int | None,
    backends: str | None,
    stacks: str | None,
    certs: Path | None,
    insecure: bool,
    name: str,
) -> None:
    """Run sweep cells for the Dask scheduler at SCHEDULER (as root), after a preflight: what
    `doctor` checks, and what this host can offer (backends, stacks). A host that fails the
    preflight says why and joins no cluster. SCHEDULER is tls://HOST:PORT with --certs DIR; a
    plain tcp:// scheduler only on loopback or with --insecure (it would let anyone who reaches
    it run code here as root)."""
    from testbed.config import validate_run_name
    from testbed.experiment import worker as side
    from testbed.experiment.tls import cluster_files
    from testbed.rtc.stack import STACKS

    try:
        check_address("SCHEDULER", scheduler)
        tls = cluster_files("SCHEDULER", scheduler, certs, insecure, "worker")
        validate_run_name(name[:4])
        if cores_per_cell is not None and cores_per_cell < 1:
            raise ConfigError("--cores-per-cell", str(cores_per_cell), "valid: a whole number >= 1")
        only_backends = _names("--backends", backends, ("emu", "netem", "netem-uml"))
        only_stacks = _names("--stacks", stacks, tuple(STACKS))
        offer = side.preflight(only_backends, only_stacks)
        if offer.problems:
            raise UnavailableError(f"this host ({platform.node()}) takes no cells: "
                                   + "; ".join(offer.problems))  # fmt: skip
        cpus = os.cpu_count() or 1
        slots = max(1, cpus // cores_per_cell) if cores_per_cell else 1
        side.configure(name, offer)
        click.echo(f"worker {platform.node()} (pid {os.getpid()}): {slots} cell(s) at a time, "
                   f"offers {', '.join(offer.capabilities)}; joining {scheduler}")  # fmt: skip
        asyncio.run(_serve(scheduler, slots, side.resources(offer, slots), tls))
    except TestbedError as e:
        fail(e)
    click.echo("worker: stopped")


async def _serve(
    address: str, slots: int, resources: dict[str, float], tls: TlsFiles | None
) -> None:
    """The Dask worker in this process until it is told to stop (SIGTERM, SIGINT, SIGHUP):
    then its cells are told to unwind first, and it leaves the cluster."""
    import dask
    from distributed import Worker

    from testbed.experiment.cluster import quiet
    from testbed.experiment.tls import is_loopback
    from testbed.experiment.worker import release_work, stop_all

    quiet()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        loop.add_signal_handler(sig, stop.set)
    # Dask's HTTP server starts even without a dashboard: on loopback, serving nothing
    dask.config.set({"distributed.worker.http.routes": [], **(tls.config() if tls else {})})
    try:
        w: Any = await Worker(address, nthreads=slots, resources=resources, death_timeout=10,
                              dashboard=False, dashboard_address="127.0.0.1:0",
                              host="127.0.0.1" if is_loopback(address) else None,
                              name=f"{platform.node()}-{os.getpid()}",
                              security=tls.security() if tls else None)  # fmt: skip
    except (OSError, TimeoutError) as e:
        raise UnavailableError(f"cannot reach the Dask scheduler at {address} ({e}); is it "
                               "running (`dask scheduler`)?") from None  # fmt: skip
    finished = asyncio.ensure_future(w.finished())
    told = asyncio.ensure_future(stop.wait())
    await asyncio.wait([finished, told], return_when=asyncio.FIRST_COMPLETED)
    if stop.is_set():
        await loop.run_in_executor(None, stop_all)
        await w.close()
    release_work()
