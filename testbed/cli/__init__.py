"""The `testbed` command. Thin: parse -> config -> call the layer below. One module per group
of commands (topo, stream, sweep, bench, roi); common.py has what they share.

Bad input exits 2 with one line naming the file, the key and what is valid, before anything
is set up. Every command takes --name (default tb): the prefix of everything a topology makes.
"""

from __future__ import annotations

import click

from testbed.cli import (
    bench,
    cluster,
    containers,
    roi,
    stream,
    sweep,
    topo,
    trace,
    viewer,
    worker,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rtc-testbed")
def cli() -> None:
    """rtc-testbed: emulated links and WebRTC measurement in network namespaces."""


for command in (topo.up, topo.exec_, topo.down, topo.clean, topo.doctor, stream.stream,
                sweep.run_cmd, sweep.report, sweep.plot, bench.bench, roi.roi, viewer.judge,
                viewer.devibench, trace.trace, worker.worker, containers.docker, cluster.cluster,
                cluster.scheduler):  # fmt: skip
    cli.add_command(command)
roi.roi.add_command(viewer.questions)


def main() -> None:
    cli(prog_name="testbed")


if __name__ == "__main__":
    main()
