"""`testbed report --rmcat` and `testbed plot --rmcat`: RFC 8867 cases judged, and drawn."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from testbed.cli.common import fail
from testbed.errors import TestbedError


def report_rmcat(path: Path, csv_out: Path | None) -> None:
    """Every cell of every case under path, then the scorecard."""
    from testbed.analysis.rmcatreport import analyse, lines, scorecard, tidy

    try:
        rows = analyse(path, click.echo)
    except TestbedError as e:
        fail(e)
    for line in lines(rows):
        click.echo(line)
    click.echo("\nscorecard (worst verdict over each case's cells; docs/rmcat.md):")
    click.echo(scorecard(rows).to_string())
    if csv_out:
        tidy(rows).to_csv(csv_out, index=False)
        click.echo(f"metrics per cell and flow: {csv_out}")


def plot_rmcat(path: Path, out: Path | None) -> None:
    """A figure per cell of every case under path, beside the results (never inside them)."""
    from testbed.analysis.load import _cells
    from testbed.analysis.plots import save
    from testbed.analysis.rmcat import case_of
    from testbed.analysis.rmcatcell import load_cell
    from testbed.analysis.rmcatplot import case_figure
    from testbed.analysis.rmcatreport import results_folders

    try:
        for results in results_folders(path):
            rmcat = case_of(results)
            if rmcat is None:
                continue
            target = out or results.parent / f"{results.name}-rmcat"
            for cell in _cells(results):
                data = load_cell(cell, rmcat.bottleneck)
                label = data.flows[0].label if data.flows else ""
                grid = {k: v for k, v in data.meta.get("params", {}).items()
                        if k not in ("stream", "repetition")}  # fmt: skip
                variant = f" ({rmcat.variant})" if rmcat.variant else ""
                title = (f"RFC 8867 {rmcat.case.case}{variant}: {label}"
                         + "".join(f", {_words(k, v)}" for k, v in grid.items()))  # fmt: skip
                name = f"{results.name}-{cell.name}.pdf"  # 5.1 and 5.1-udp share cell ids
                paths = save(case_figure(data, title), target / name)
                click.echo("figure: " + ", ".join(str(p) for p in paths))
    except TestbedError as e:
        fail(e)


def _words(key: str, value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {v}" for k, v in value.items())
    return f"{key} {value}"


def skip_not_applicable(exp: Any) -> Any:
    """The experiment without the configurations its RMCAT case does not apply to (said)."""
    from testbed.rtc.spec import session_streams

    if exp.rmcat is None or not exp.rmcat.not_applicable:
        return exp
    from dataclasses import replace

    keep = []
    for c in exp.configs:
        streams = [s for _, _, s in session_streams(c.topology, c.stream)]
        stacks = {s.stack_of(r) for s in streams for r in ("sender", "receiver")}
        why = exp.rmcat.na_reason(stacks)
        if why:
            click.echo(f"not run (RFC 8867 {exp.rmcat.case.case} does not apply): {why}")
        else:
            keep.append(c)
    return replace(exp, configs=tuple(keep))
