"""`testbed cluster certs DIR` and `testbed scheduler`: a remote cluster only its owner can use."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import click

from testbed.cli.common import fail
from testbed.errors import ConfigError, TestbedError

CERTS_HELP = "the cluster's certificates (`testbed cluster certs DIR`): TLS, mutual"


@click.group()
def cluster() -> None:
    """Remote clusters (docs/sweeps.md)."""


@cluster.command()
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--days", type=int, default=365, show_default=True, help="validity")
@click.option("--host", "hosts", multiple=True, help="a name or address for the scheduler's "
              "and workers' certificates (repeatable; Dask does not check it)")  # fmt: skip
def certs(folder: Path, days: int, hosts: tuple[str, ...]) -> None:
    """Make a private CA and certificates for the scheduler, the workers and the client in
    FOLDER: ca.pem, scheduler.pem, worker.pem, client.pem (certificate + key, mode 0600). Copy
    the folder to every host of the cluster; the CA's key is not kept."""
    from testbed.experiment.tls import make_certs

    try:
        written = make_certs(folder, days, hosts)
    except TestbedError as e:
        fail(e)
    for p in written:
        click.echo(f"wrote {p}")
    click.echo(f"next: testbed scheduler --certs {folder}; testbed worker tls://SCHEDULER:8786 "
               f"--certs {folder}; testbed run EXP --cluster tls://SCHEDULER:8786 --certs {folder}")  # fmt: skip


@click.command()
@click.option("--certs", type=click.Path(path_type=Path), default=None, help=CERTS_HELP)
@click.option("--host", default="", help="address to listen on [every interface]")
@click.option("--port", type=int, default=8786, show_default=True)
@click.option("--scheduler-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="write the scheduler's address here (for scripts)")  # fmt: skip
@click.option("--insecure", is_flag=True, help="plain tcp:// with no --certs: only on a network "
              "only you use (anyone reaching the port can run code on the workers)")  # fmt: skip
def scheduler(certs: Path | None, host: str, port: int, scheduler_file: Path | None,
              insecure: bool) -> None:  # fmt: skip
    """Run a Dask scheduler for testbed workers: `dask scheduler` with the TLS options of
    --certs (encryption required), no dashboard, and the cell retry limit the runner expects.
    Needs no root."""
    from testbed.experiment.cluster import ALLOWED_FAILURES
    from testbed.experiment.tls import check_certs

    try:
        if not 0 <= port <= 65535:
            raise ConfigError("--port", str(port), "valid: 0-65535 (0: any free port)")
        if certs is None and not insecure:
            raise ConfigError("--certs", "", "a scheduler takes the cluster's certificates "
                              "(`testbed cluster certs DIR`, then --certs DIR); --insecure runs "
                              "plain tcp:// on a network only you use")  # fmt: skip
        dask = shutil.which("dask", path=os.path.dirname(sys.executable)) or shutil.which("dask")
        if dask is None:
            raise TestbedError("the `dask` command is not installed beside this Python")
        # no dashboard; Dask's HTTP server still starts: on loopback, and serving nothing
        argv = [dask, "scheduler", "--port", str(port), "--no-dashboard",
                "--dashboard-address", "127.0.0.1:0"]  # fmt: skip
        env = dict(os.environ, DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=str(ALLOWED_FAILURES),
                   DASK_DISTRIBUTED__SCHEDULER__HTTP__ROUTES="[]")  # fmt: skip
        if certs is not None:
            argv += check_certs(certs, "scheduler").scheduler_argv()
            env["DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION"] = "True"
        if host:
            argv += ["--host", host]
        if scheduler_file is not None:
            argv += ["--scheduler-file", str(scheduler_file)]
    except TestbedError as e:
        fail(e)
    click.echo(" ".join(argv), err=True)
    os.execve(dask, argv, env)
