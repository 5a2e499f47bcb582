"""`testbed docker ...`: the daemon the testbed may start, and the images it builds."""

from __future__ import annotations

import click

from testbed.cli.common import fail, require_root
from testbed.errors import TestbedError


@click.group()
def docker() -> None:
    """The Docker daemon and images for container hosts (docs/docker.md)."""


@docker.command()
def start() -> None:
    """Start the testbed's own dockerd (own data root, no bridge, no iptables, no forwarding),
    unless a daemon already answers; the host's forwarding and firewall stay as they were."""
    from testbed.net.containers import daemon

    require_root()
    try:
        at = daemon.start(say=click.echo)
    except TestbedError as e:
        fail(e)
    click.echo(f"DOCKER_HOST={at}")


@docker.command()
def stop() -> None:
    """Stop the testbed's own dockerd (a daemon it did not start is never touched)."""
    from testbed.net.containers import daemon

    require_root()
    if not daemon.stop(say=click.echo):
        click.echo("the testbed's own dockerd is not running; nothing to stop")


@docker.command()
def status() -> None:
    """Which daemon the testbed would use, and whether it answers."""
    from testbed.net.containers import daemon

    click.echo(daemon.describe())


@docker.command()
@click.option("--kind", type=click.Choice(["endpoint", "testbed"]), default="endpoint",
              show_default=True, help="endpoint: the testbed in a venv (container hosts); "
              "testbed: the whole project, `make setup` done (make run / make test inside)")  # fmt: skip
@click.option("--rebuild-base", is_flag=True, help="debootstrap the base image again")
@click.option("--if-stale", is_flag=True, help="only when missing or built from other sources")
def image(kind: str, rebuild_base: bool, if_stale: bool) -> None:
    """Build an image with no registry: base by debootstrap, then a Dockerfile on it."""
    from testbed.net.containers import image as images

    require_root()
    try:
        if if_stale and not rebuild_base and images.current(kind):
            click.echo(f"{images.IMAGES[kind]} is current ({images.source_digest()})")
            return
        images.build(kind, say=click.echo, rebuild_base=rebuild_base)
    except TestbedError as e:
        fail(e)
