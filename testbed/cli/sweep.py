"""Sweeps and their analysis: run, report, plot."""

from __future__ import annotations

import errno
import sys
import time
from pathlib import Path
from typing import Any

import click

from testbed.cli.common import fail, name_option, require_root
from testbed.errors import ConfigError, TestbedError, interrupt_exit_code


@click.command(name="run")
@click.argument("experiment", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="results folder [results/<experiment name>]",
)
@click.option("--jobs", type=int, default=None, help="cells at once [one per core when every cell "
              "is aiortc with the synthetic source, else one per two cores]")  # fmt: skip
@click.option("--backend", default="auto", show_default=True, help="auto | emu | netem")
@click.option("--yes", is_flag=True, help="run a grid larger than its cell limit")
@click.option(
    "--cluster",
    default=None,
    metavar="ADDRESS",
    help="a Dask scheduler (tls://HOST:8786 with --certs) whose `testbed worker`s run the cells "
    "[an embedded cluster of --jobs workers]",
)
@click.option(
    "--order",
    type=click.Choice(["shuffle", "grid"]),
    default="shuffle",
    show_default=True,
    help="cell order: shuffled (so a machine's drift does not follow a grid axis) or the grid's",
)
@click.option("--order-seed", type=int, default=None, help="the shuffle's seed [random, recorded]")
@click.option("--certs", type=click.Path(path_type=Path), default=None,
              help="the cluster's certificates (`testbed cluster certs DIR`) for --cluster tls://")  # fmt: skip
@click.option("--insecure", is_flag=True, help="allow --cluster tcp:// off this machine "
              "(unauthenticated: only on a network only you use)")  # fmt: skip
@click.option(
    "--dry-run", is_flag=True, help="validate every cell and print the plan; start nothing"
)
@click.option("--pin/--no-pin", default=None, help="each cell on its own cores [when --jobs > 1 "
              "and this host has a core for each]")  # fmt: skip
@click.option("--only", "only", multiple=True, metavar="KEY=VALUE",
              help="only the configurations with this grid value (repeatable), e.g. "
              "--only stream.abr=remb --only stream.stack=aiortc")  # fmt: skip
@name_option()
def run_cmd(
    experiment: Path,
    out: Path | None,
    jobs: int | None,
    backend: str,
    yes: bool,
    cluster: str | None,
    order: str,
    order_seed: int | None,
    certs: Path | None,
    insecure: bool,
    dry_run: bool,
    pin: bool | None,
    only: tuple[str, ...],
    name: str,
) -> None:
    """Run every cell of EXPERIMENT (skipping cells already done) as tasks on a Dask cluster
    (embedded unless --cluster), with a progress bar."""
    from testbed.cli.rmcat import skip_not_applicable
    from testbed.config import validate_run_name
    from testbed.experiment.runner import RunOptions, default_jobs, pin_cells, run_experiment
    from testbed.experiment.spec import load_experiment
    from testbed.net.network import terminate_unwinds
    from testbed.shaping.backends import choose_backend

    try:
        validate_run_name(name)
        exp = load_experiment(experiment, max_cells=10**9 if yes else None)
        if only:
            exp = _only(exp, only)
        exp = skip_not_applicable(exp)
        if jobs is not None and jobs < 1:
            raise ConfigError("--jobs", str(jobs), "valid: a whole number >= 1")
        if dry_run:
            from testbed.experiment.dryrun import plan_lines
            from testbed.experiment.runner import done_cells

            target = out or Path("results") / exp.name
            for line in plan_lines(exp, done_cells(target), jobs or default_jobs(exp)):
                click.echo(line)
            return
        tls = None
        if cluster is not None:
            from testbed.cli.worker import check_address
            from testbed.experiment.tls import cluster_files

            check_address("--cluster", cluster)
            tls = cluster_files("--cluster", cluster, certs, insecure, "client")
        elif certs is not None:
            raise ConfigError("--certs", str(certs), "only with --cluster tls://HOST:PORT")
        chosen = choose_backend(backend, name)
        opts = RunOptions(jobs or default_jobs(exp), name, chosen, click.echo, cluster=cluster,
                          order=order, order_seed=order_seed, tls=tls, pin=pin)  # fmt: skip
        pin_cells(opts)  # --pin with more cells than cores: one line, before anything starts
        require_root()
        target = out or Path("results") / exp.name
        start = time.monotonic()
        with terminate_unwinds():
            run_experiment(exp, target, opts)
    except TestbedError as e:
        fail(e)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        fail(TestbedError(f"{e.filename or 'the results folder'}: no space left on its disk; "
                          "free space (or use another -o) and rerun; finished cells are kept"))  # fmt: skip
    except KeyboardInterrupt as e:
        click.echo(
            f"testbed: interrupted ({e or 'SIGINT'}); finished cells are kept, rerun to continue",
            err=True,
        )
        sys.exit(interrupt_exit_code(e))
    click.echo(f"done in {time.monotonic() - start:.0f} s: {target}  (next: testbed plot {target})")


def _only(exp: Any, only: tuple[str, ...]) -> Any:
    """The experiment cut to the configurations --only names (none left: one line, exit 2)."""
    import yaml

    wanted: dict[str, Any] = {}
    for item in only:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ConfigError("--only", item, "valid: KEY=VALUE, a grid key and one of its values")
        wanted[key] = yaml.safe_load(value)
    cut = exp.only(wanted)
    if not cut.configs:
        raise ConfigError("--only", " ".join(only), f"no configuration of {exp.source} matches; "
                          f"its grid: {', '.join(exp.grid) or 'none'}")  # fmt: skip
    return cut


def _configs(results: Path) -> Any:
    from testbed.analysis.load import load_frames
    from testbed.analysis.metrics import cell_table, config_table

    return config_table(cell_table(load_frames(results)))


def _report_accuracy(results: Path, csv_out: Path | None, by_task: bool, judge: str | None) -> None:
    import pandas as pd

    from testbed.analysis.accuracy import accuracy_table, answers_table
    from testbed.viewer.offline import bitrate_at_share

    try:
        table = accuracy_table(answers_table(results, judge), by_task=by_task)
    except TestbedError as e:
        fail(e)
    with pd.option_context("display.width", 220, "display.max_columns", 30, "display.precision", 3):
        click.echo(table.to_string(index=False))
    if not by_task:
        for (video, loss), g in table.groupby(["video", "loss_pct"], dropna=False):
            at = bitrate_at_share(g)
            ratio = at.get("ROI", float("nan")) / at.get("uniform", float("nan"))
            click.echo(f"{video}, {loss:g}% loss: 90% of top accuracy at "
                       + ", ".join(f"{k} {v:.3f} Mbps" for k, v in at.items())
                       + (f" (ROI / uniform {ratio:.2f})" if len(at) > 1 else ""))  # fmt: skip
    if csv_out:
        table.to_csv(csv_out, index=False)


@click.command()
@click.argument("results", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--by",
    default=None,
    help="stack | fec | abr | nack | roi: side-by-side tables per loss "
    "rate; session: a row per session of cells that ran several",
)
@click.option(
    "--metric", default="p95", show_default=True, help="with --by: p50 | p95 | p99 | mean"
)
@click.option("--accuracy", is_flag=True, help="the AI viewer's task accuracy per configuration")
@click.option("--by-task", is_flag=True, help="with --accuracy: a row per task type too")
@click.option("--judge", default=None, help="with --accuracy: only this judge's answers")
@click.option("--rmcat", is_flag=True, help="RFC 8868's metrics and a verdict per cell of RFC 8867 "
              "cases; RESULTS: one case's results or a folder of them; then the scorecard")  # fmt: skip
def report(results: Path, csv_out: Path | None, by: str | None, metric: str, accuracy: bool,
           by_task: bool, judge: str | None, rmcat: bool) -> None:  # fmt: skip
    """Per configuration: achieved bitrate, frames, completion, latency with 95% CIs, model."""
    if rmcat:
        from testbed.cli.rmcat import report_rmcat

        report_rmcat(results, csv_out)
        return
    if accuracy:
        _report_accuracy(results, csv_out, by_task, judge)
        return
    import pandas as pd

    from testbed.analysis.metrics import VARIANTS, other_params

    if by == "session":
        from testbed.analysis.sessions import session_table

        try:
            table = session_table(results)
        except TestbedError as e:
            fail(e)
        click.echo(table.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
        if csv_out:
            table.to_csv(csv_out, index=False)
        return
    try:
        configs = _configs(results)
    except TestbedError as e:
        fail(e)
    if by is not None:
        if by not in VARIANTS or by not in configs:
            fail(
                ConfigError("--by", by, f"valid: {', '.join(VARIANTS)} (a column of these results)")
            )
        from testbed.analysis.metrics import side_by_side

        click.echo(side_by_side(configs, by, metric))
        return
    from testbed.analysis.load import mixed_hosts

    for warning in mixed_hosts(results):
        click.echo(warning, err=True)
    varying = [v for v in VARIANTS if v in configs and configs[v].nunique() > 1]
    varying += other_params(configs)
    extra = []
    if varying:
        extra = ["within_budget", "fec_overhead_pct", "rtx_overhead_pct", "by_fec", "by_rtx"]
        if "abr" in varying:
            extra.insert(1, "target_mbps")
        if "roi" in varying:
            extra = [
                "within_budget",
                "psnr_roi_db",
                "psnr_bg_db",
                "decoded",
                "encode_ms",
                "scorer_ms",
            ]
    if "abr" in varying and "dropaware_p95_ms" in configs:  # a controller may drop frames
        extra += ["dropaware_p50_ms", "dropaware_p95_ms"]
    if "audio_p50_ms" in configs and configs.audio_p50_ms.notna().any():
        extra += ["audio_p50_ms", "audio_p99_ms", "audio_lost_pct"]
    cols = [
        "loss_pct",
        *varying,
        "bitrate_mbps",
        "achieved_mbps",
        "repetitions",
        "frames",
        "completion",
        "latency_mean_ms",
        "latency_p50_ms",
        "latency_p95_ms",
        "latency_p95_lo",
        "latency_p95_hi",
        "latency_p99_ms",
        "model_p50_ms",
        "model_p95_ms",
        "retransmissions",
        *extra,
    ]
    if varying:  # the NACK-only model does not describe FEC or a moving bitrate
        cols = [c for c in cols if not c.startswith("model_")]
    with pd.option_context("display.width", 200, "display.max_columns", 30, "display.precision", 2):
        click.echo(configs[cols].to_string(index=False))
    _say_cell_warnings(results)
    if csv_out:
        configs.to_csv(csv_out, index=False)


@click.command()
@click.argument("results", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="figure path (.pdf and .png) [RESULTS/../<name>-fig3.pdf]",
)
@click.option("--metric", default="p95", show_default=True, help="p50 | p95 | p99 | mean")
@click.option("--linear", is_flag=True, help="linear x axis (default log)")
@click.option("--response-ms", type=float, default=300.0, show_default=True)
@click.option("--model-ms", type=float, default=232.0, show_default=True)
@click.option(
    "--yellow-loss-pct",
    type=float,
    default=None,
    help="the yellow region holds up to this loss [the highest loss any bitrate meets]",
)
@click.option(
    "--by",
    default=None,
    help="stack | fec | abr | nack | roi: a panel per loss, a line per variant",
)
@click.option(
    "--accuracy",
    is_flag=True,
    help="the AI viewer's task accuracy vs achieved bitrate, uniform vs ROI (Figure 9)",
)
@click.option(
    "--timeseries",
    is_flag=True,
    help="RESULTS is a cell folder or a results folder: target vs achieved bitrate, latency and "
    "losses per second, one line per cell",
)
@click.option("--rmcat", is_flag=True, help="RFC 8867 cases: each flow's rate vs the capacity "
              "available to it, and delay, over time; a figure per cell")  # fmt: skip
def plot(
    results: Path,
    out: Path | None,
    metric: str,
    linear: bool,
    response_ms: float,
    model_ms: float,
    yellow_loss_pct: float | None,
    by: str | None,
    timeseries: bool,
    accuracy: bool,
    rmcat: bool,
) -> None:
    """The Figure 3 view, with the yellow region computed from the data (or --by, --timeseries)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    from testbed.analysis.metrics import VARIANTS, yellow_region
    from testbed.analysis.plots import fig3, roi_figure, save, variants

    if metric not in ("p50", "p95", "p99", "mean"):
        fail(ConfigError("--metric", metric, "valid: p50, p95, p99, mean"))
    if by is not None and by not in VARIANTS:
        fail(ConfigError("--by", by, f"valid: {', '.join(VARIANTS)}"))
    budget = response_ms - model_ms
    if rmcat:
        from testbed.cli.rmcat import plot_rmcat

        plot_rmcat(results, out)
        return
    if timeseries:
        _plot_timeseries(results, out, budget)
        return
    if accuracy:
        from testbed.analysis.accuracy import accuracy_table, answers_table
        from testbed.analysis.plots import accuracy_figure

        try:
            table = accuracy_table(answers_table(results))
        except TestbedError as e:
            fail(e)
        paths = save(accuracy_figure(table), out or results.parent / f"{results.name}-accuracy.pdf")
        click.echo("figure: " + ", ".join(str(p) for p in paths))
        return
    try:
        configs = _configs(results)
    except TestbedError as e:
        fail(e)
    if by is not None:
        if by not in configs:
            fail(ConfigError(str(results), by, f"these results have no {by} column"))
        draw = (
            roi_figure(configs, metric, budget)
            if by == "roi"
            else variants(configs, by, metric, budget)
        )
        paths = save(draw, out or results.parent / f"{results.name}-by-{by}.pdf")
        click.echo("figure: " + ", ".join(str(p) for p in paths))
        return
    target = out or results.parent / f"{results.name}-fig3.pdf"
    fig = fig3(
        configs, metric=metric, budget_ms=budget, log_x=not linear, max_loss_pct=yellow_loss_pct
    )
    paths = save(fig, target)
    region = yellow_region(configs, metric, budget, yellow_loss_pct)
    where = (f"{region[0]:.2f}-{region[1]:.2f} Mbps, holding up to {region[2]:g}% loss"
             if region else "none (no bitrate meets it)")  # fmt: skip
    click.echo(f"yellow region ({metric} <= {budget:g} ms): {where}")
    click.echo("figure: " + ", ".join(str(p) for p in paths))


def _say_cell_warnings(results: Path) -> None:
    """Cells whose controller raised or returned nonsense, in its own words, and cells whose
    fidelity record was flagged (testbed.rtc.fidelity): never hidden in the averages."""
    from testbed.analysis.load import load_cells

    cells = load_cells(results)
    if "abr_errors" not in cells:
        return
    for _, c in cells[cells.abr_errors > 0].iterrows():
        click.echo(f"cell {c.cell_id}: the controller failed {c.abr_errors} time(s), kept its "
                   f"last good target; first: {c.abr_first_error}")  # fmt: skip
    for _, c in cells[cells.fidelity_flags.astype(bool)].iterrows():
        click.echo(f"cell {c.cell_id} flagged (kept after its rerun): {c.fidelity_flags}")


def _plot_timeseries(results: Path, out: Path | None, budget_ms: float) -> None:
    import json

    from testbed.analysis.plots import save, timeseries
    from testbed.rtc.timeseries import cell_series

    cells = [results] if (results / "frames.parquet").exists() else sorted(
        p for p in (results / "cells").glob("*") if (p / "frames.parquet").exists()
    )  # fmt: skip
    if not cells:
        fail(
            ConfigError(
                str(results),
                "",
                "no frames.parquet here or in cells/*; give a cell or a results folder",
            )
        )
    series, controls = {}, {}
    for cell in cells:
        meta = json.loads((cell / "cell.json").read_text()) if (cell / "cell.json").exists() else {}
        stream = meta.get("stream", {})
        label = ", ".join(f"{k.removeprefix('stream.')}={v}" for k, v in meta.get("params", {}).items()
                          if k != "repetition") or f"{stream.get('abr', 'fixed')} {cell.name}"  # fmt: skip
        if meta.get("sessions"):  # several sessions: every flow, with the bottleneck's capacity
            cap = (meta.get("sharing") or {}).get("capacity_mbps")
            import pandas as pd

            first = pd.read_parquet(cell / "frames.parquet").groupby("session").sent_first_ns.min()
            for name in meta["sessions"]:
                ts = cell_series(cell / "sessions" / name)
                ts["t_s"] = ts.t_s + (first[name] - first.min()) / 1e9  # one clock: the cell's
                if cap:
                    ts["capacity_mbps"] = float(cap)
                series[f"{label}: {name}" if len(cells) > 1 else name] = ts
            continue
        series[label] = cell_series(cell)
        if (cell / "controller.parquet").exists():
            import pandas as pd

            controls[label] = pd.read_parquet(cell / "controller.parquet")
    target = out or (results.parent / f"{results.name}-timeseries.pdf")
    paths = save(timeseries(series, budget_ms, controls), target)
    click.echo("figure: " + ", ".join(str(p) for p in paths))
