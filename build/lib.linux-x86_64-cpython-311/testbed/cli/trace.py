"""`testbed trace`: look at a trace or schedule file, or convert it."""

from __future__ import annotations

from pathlib import Path

import click

from testbed.cli.common import fail
from testbed.errors import TestbedError

_OPTS = [
    click.option(
        "--pattern", default="uplink", show_default=True, help="OpenNetLab: uplink | downlink"
    ),
    click.option("--loss-unit", default=None, help="OpenNetLab losses: percent | fraction"),
]


def _read(path: Path, pattern: str, loss_unit: str | None) -> object:
    from testbed.config import parse_link_spec
    from testbed.config.traces import read_link_trace

    if path.suffix.lower() in (".yaml", ".yml"):
        spec = parse_link_spec({"schedule": str(path.resolve())}, str(path), "schedule", Path.cwd())
        return spec.schedule
    opts = {"trace_pattern": pattern, **({"trace_loss_unit": loss_unit} if loss_unit else {})}
    parse_link_spec({"trace": str(path.resolve()), **opts}, str(path), pattern, Path.cwd())
    return read_link_trace(path, pattern, loss_unit)


@click.group()
def trace() -> None:
    """Trace and schedule files: Mahimahi, OpenNetLab JSON, cooked `time_s Mbps`, schedules."""


@trace.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@_OPTS[0]
@_OPTS[1]
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="figure (.pdf and .png) [PATH's name + .pdf beside it]",
)
def show(path: Path, pattern: str, loss_unit: str | None, out: Path | None) -> None:
    """Print a trace's summary and draw its capacity, delay and loss over time."""
    import matplotlib

    matplotlib.use("Agg")
    from testbed.analysis.plots import save, trace_figure
    from testbed.config.traces import as_series, summary

    try:
        series = as_series(_read(path, pattern, loss_unit))  # type: ignore[arg-type]
    except TestbedError as e:
        fail(e)
    s = summary(series)
    click.echo(f"{path.name}: {s['duration_s']:g} s in {s['segments']:.0f} segments; capacity mean "
               f"{s['mean_mbps']:.3f} Mbps, min {s['min_mbps']:.3f}, max {s['max_mbps']:.3f}; outage "
               f"{s['outage_s']:g} s; mean delay {s['mean_delay_ms']:.1f} ms, mean loss "
               f"{s['mean_loss_pct']:.2f}%")  # fmt: skip
    paths = save(trace_figure(series, path.name), out or path.with_suffix(".pdf"))
    click.echo("figure: " + ", ".join(str(p) for p in paths))


@trace.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--to", "to", type=click.Choice(["mahimahi", "schedule"]), required=True)
@_OPTS[0]
@_OPTS[1]
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def convert(path: Path, to: str, pattern: str, loss_unit: str | None, out: Path) -> None:
    """Write the equivalent Mahimahi trace (capacity only) or schedule file (YAML)."""
    import yaml

    from testbed.config.traces import as_series, to_mahimahi, to_schedule

    try:
        series = as_series(_read(path, pattern, loss_unit))  # type: ignore[arg-type]
        if to == "mahimahi":
            out.write_text("\n".join(map(str, to_mahimahi(series))) + "\n")
        else:
            out.write_text(yaml.safe_dump(to_schedule(series), sort_keys=False))
    except TestbedError as e:
        fail(e)
    click.echo(f"wrote {out} ({to}, {len(series)} segments of {path.name})")
