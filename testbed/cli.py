"""The `testbed` command. Thin: parse -> config -> call the layer below.

Bad input exits 2 with one line naming the file, the key and what is valid, before anything
is set up. Every command takes --name (default tb): the prefix of everything a topology makes.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from testbed.errors import ConfigError, TestbedError

NAME_HELP = "run name: the prefix of every namespace, interface and process this topology makes"


def _fail(e: TestbedError) -> NoReturn:
    click.echo(f"testbed: error: {e}", err=True)
    sys.exit(e.exit_code)


def _echo_prefixed(prefix: str, message: str) -> None:
    click.echo(prefix + message)


def _numbers(option: str, text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x]
    except ValueError:
        values = []
    if not values or any(v <= 0 for v in values):
        _fail(ConfigError(option, text, "expected positive numbers, comma-separated, e.g. 1,2,4"))
    return values


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _require_root() -> None:
    if os.geteuid() != 0:
        _fail(TestbedError("this command creates network namespaces: run it as root"))


def _name_option(default: str | None = "tb", help_text: str = NAME_HELP) -> Any:
    return click.option("--name", "name", default=default, show_default=True, help=help_text)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rtc-testbed")
def cli() -> None:
    """rtc-testbed: emulated links and WebRTC measurement in network namespaces."""


@cli.command()
@click.argument("topology", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--backend", default=None, help="link backend: auto | emu | netem [topology's, or auto]"
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="override a topology value, e.g. --set uplink.loss_pct=2 (repeatable)",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where the per-packet link logs go [state dir/logs]",
)
@click.option("--seed", type=int, default=None, help="seed of the loss and jitter models")
@_name_option()
def up(
    topology: Path,
    backend: str | None,
    sets: tuple[str, ...],
    log_dir: Path | None,
    seed: int | None,
    name: str,
) -> None:
    """Build TOPOLOGY and leave it up (tear it down with `testbed down`)."""
    from testbed.config import load_topology, validate_run_name
    from testbed.net.capabilities import choose_backend
    from testbed.net.network import Network, describe_spec
    from testbed.shaping.backends import make_backend

    try:
        validate_run_name(name)
        topo = load_topology(topology, sets)
        chosen, why = choose_backend(backend or topo.backend, name)
        _require_root()
        net = Network(
            topo, make_backend(chosen), run=name, backend_reason=why, log_dir=log_dir, seed=seed
        )
        info = net.start()
    except TestbedError as e:
        _fail(e)
    except KeyboardInterrupt:
        click.echo("testbed: interrupted; everything created was removed", err=True)
        sys.exit(130)
    click.echo(
        f"topology {topo.name} is up as {name!r} (backend {chosen}: {why}; seed {info.seed})"
    )
    for host, h in info.hosts.items():
        click.echo(f"  {host:<12} {h.address:<12} netns {h.netns}")
    for lname, link in info.links.items():
        for direction in ("uplink", "downlink"):
            click.echo(f"  {lname}.{direction}: {describe_spec(link[direction]['spec'])}")
    click.echo(f"link logs: {info.log_dir}")
    click.echo(
        f"run commands with: testbed exec --name {name} HOST -- CMD...;  stop: testbed down --name {name}"
    )


@cli.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@_name_option()
def exec_(host: str, command: tuple[str, ...], name: str) -> None:
    """Run COMMAND inside HOST, with TB_ADDR_<HOST> set for every host."""
    from testbed.net.network import load_state
    from testbed.net.nsenter import enter_netns

    try:
        info = load_state(name)
    except TestbedError as e:
        _fail(e)
    if host not in info.hosts:
        _fail(ConfigError("exec", host, f"unknown host; valid: {', '.join(info.hosts)}"))
    env = dict(os.environ)
    env.update(info.env())
    try:
        enter_netns(info.hosts[host].netns)
    except OSError as e:
        _fail(TestbedError(f"cannot enter {host} ({e.strerror}): is {name!r} still up? "
                           "`testbed clean` removes a crashed topology"))  # fmt: skip
    try:
        os.execvpe(command[0], list(command), env)
    except FileNotFoundError:
        _fail(TestbedError(f"{command[0]}: command not found inside {host}"))


def _print_stats(info: Any) -> None:
    """One line per emulated direction, from the stats each emulator wrote when it stopped."""
    for lname, link in info.links.items():
        for direction in ("uplink", "downlink"):
            tag = f"{lname}.{direction}"
            if link[direction].get("backend") != "emu":
                continue  # kernel netem keeps its own counters (tc -s qdisc), not ours
            path = link[direction].get("stats")
            try:
                st = json.loads(Path(path).read_text()) if path else None
            except (OSError, ValueError):
                st = None
            if st is None:
                click.echo(f"  {tag}: no statistics: its emulator did not stop cleanly (killed?)")
                continue
            late = st["lateness_us"]
            lat = (
                f"release lateness p50 {late['p50']:.0f} us p99 {late['p99']:.0f} us"
                if late["p50"] is not None
                else "no packets"
            )
            click.echo(
                f"  {tag}: {st['packets_in']} in, {st['deliver']} delivered, "
                f"{st['drop_loss']} lost, {st['drop_queue']} queue drops; {lat}; "
                f"{st['stalls_over_1ms']} releases >1 ms late; cpu {st['cpu_s']:.2f} s"
            )


@cli.command()
@_name_option()
def down(name: str) -> None:
    """Tear down the topology NAME (processes first, then namespaces). Keeps its logs."""
    from testbed.net.ledger import Ledger
    from testbed.net.network import NetworkInfo, state_path

    _require_root()
    ledger = Ledger(name)
    try:
        ledger.lock()
    except TestbedError as e:
        _fail(e)
    try:
        if ledger.is_empty():
            click.echo(f"nothing is up as {name!r}")
            return
        state = state_path(ledger)
        info = NetworkInfo.from_json(state.read_text()) if state.exists() else None
        removed = ledger.undo()
        state.unlink(missing_ok=True)
    finally:
        ledger.release_if_empty()
    click.echo(f"{name!r} is down ({removed} objects removed)")
    if info is not None:
        _print_stats(info)
        click.echo(f"link logs kept in {info.log_dir}")


@cli.command()
@_name_option(None, "clean only this run [every run the testbed recorded]")
def clean(name: str | None) -> None:
    """Remove everything the testbed created and recorded (after a crash too), nothing else."""
    from testbed.net.ledger import Ledger, all_runs, state_root

    _require_root()
    runs = [name] if name else all_runs()
    if name is None and state_root().is_dir():
        runs = sorted(set(runs) | {p.name for p in state_root().iterdir() if p.is_dir()})
    total = 0
    for run in runs:
        ledger = Ledger(run)
        try:
            ledger.lock()
        except TestbedError as e:
            click.echo(f"skipped {run}: {e}", err=True)
            continue
        try:
            total += ledger.undo(say=functools.partial(_echo_prefixed, f"  {run}: "))
        finally:
            ledger.unlock()
        ledger.remove_state()
    click.echo(f"clean: {total} objects removed from {len(runs)} run(s)")


@cli.command()
@_name_option()
def doctor(name: str) -> None:
    """Report what the kernel offers and which link backend `auto` uses, and why."""
    from testbed.net.capabilities import choose_backend, probe_kernel, timer_lateness_us

    _require_root()
    try:
        caps = probe_kernel(name)
    except TestbedError as e:
        _fail(e)
    click.echo(f"kernel {os.uname().release}, {os.cpu_count()} CPUs")
    for cap in caps:
        click.echo(f"  {'yes' if cap.ok else 'no ':<4} {cap.name:<12} {cap.detail}")
    p50, p99 = timer_lateness_us()
    click.echo(f"  timers: select() 1 ms sleeps wake late by p50 {p50:.0f} us, p99 {p99:.0f} us")
    from testbed.shaping.uml import uml_available

    uml = "yes " if uml_available() else "no  "
    click.echo(f"  {uml} user-mode-linux  /usr/bin/linux.uml: kernel netem as a process "
               "(--backend netem on this kernel)")  # fmt: skip
    chosen, why = choose_backend("auto", name)
    click.echo(f"backend auto -> {chosen} ({why})")


@cli.command()
@click.argument("topology", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--bitrate-mbps", type=float, default=4.0, show_default=True)
@click.option("--duration-s", type=float, default=20.0, show_default=True)
@click.option("--source", default="synthetic", show_default=True, help="synthetic | video")
@click.option("--fps", type=float, default=30.0, show_default=True)
@click.option("--codec", default=None, help="video source: vp8 | h264 [vp8; roi: h264]")
@click.option("--video", default=None, help="video file for --source video [a moving pattern]")
@click.option("--nack", default="aiortc", show_default=True, help="aiortc | retry | off")
@click.option("--history-packets", type=int, default=128, show_default=True)
@click.option(
    "--stream-set",
    "stream_sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="any other stream key (e.g. keyframe_period_s=1, width=1280)",
)
@click.option("--backend", default=None, help="link backend: auto | emu | netem")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="topology override")
@click.option("--seed", type=int, default=None, help="seed of the loss and jitter models")
@click.option("-o", "--out", "out", type=click.Path(file_okay=False, path_type=Path), required=True)
@_name_option()
def stream(
    topology: Path,
    bitrate_mbps: float,
    duration_s: float,
    source: str,
    fps: float,
    codec: str | None,
    video: str | None,
    nack: str,
    history_packets: int,
    stream_sets: tuple[str, ...],
    backend: str | None,
    sets: tuple[str, ...],
    seed: int | None,
    out: Path,
    name: str,
) -> None:
    """Bring TOPOLOGY up, run one WebRTC session sender -> receiver, tear down, write OUT."""
    from testbed.config import load_topology, parse_set, validate_run_name
    from testbed.net.capabilities import choose_backend
    from testbed.net.network import terminate_unwinds
    from testbed.rtc.session import run_stream
    from testbed.rtc.spec import parse_stream, set_key
    from testbed.shaping.backends import make_backend

    data: dict[str, Any] = {
        "bitrate_mbps": bitrate_mbps,
        "duration_s": duration_s,
        "source": source,
        "fps": fps,
        "nack": nack,
        "history_packets": history_packets,
    }
    if video is not None:
        data["video"] = video
    if codec is not None:
        data["codec"] = codec
    try:
        for item in stream_sets:
            key, value = parse_set(item)
            set_key(data, key, value)
        validate_run_name(name)
        spec = parse_stream(data, "--stream")
        topo = load_topology(topology, sets)
        chosen, why = choose_backend(backend or topo.backend, name)
        _require_root()
        click.echo(
            f"streaming {spec.source} {spec.bitrate_mbps:g} Mbps for {spec.duration_s:g} s "
            f"over {topo.name} (backend {chosen}) -> {out}"
        )
        with terminate_unwinds():
            result = run_stream(
                topo, spec, out, make_backend(chosen), why, run=name, seed=seed, say=click.echo
            )
    except TestbedError as e:
        _fail(e)
    except KeyboardInterrupt:
        click.echo("testbed: interrupted; the topology was removed", err=True)
        sys.exit(130)
    s = result.summary
    lat = s["latency_ms"]
    click.echo(
        f"frames {s['frames']} (complete {s['complete']}, lost {s['lost']}), achieved "
        f"{s['achieved_mbps']:.3f} Mbps, latency p50/p95/p99 {_ms(lat['p50'])}/{_ms(lat['p95'])}/"
        f"{_ms(lat['p99'])} ms, retransmissions {s['retransmissions']}, "
        f"packets lost on first try {s['packets_lost_first_try']}"
    )
    click.echo(f"wrote {out}/frames.parquet, cell.json, pcaps and link logs")


@cli.command(name="run")
@click.argument("experiment", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="results folder [results/<experiment name>]",
)
@click.option("--jobs", type=int, default=None, help="cells at once [one per two cores]")
@click.option("--backend", default="auto", show_default=True, help="auto | emu | netem")
@click.option("--yes", is_flag=True, help="run a grid larger than its cell limit")
@_name_option()
def run_cmd(
    experiment: Path, out: Path | None, jobs: int | None, backend: str, yes: bool, name: str
) -> None:
    """Run every cell of EXPERIMENT (skipping cells already done), with a progress bar."""
    from testbed.config import validate_run_name
    from testbed.experiment.runner import default_jobs, run_experiment
    from testbed.experiment.spec import load_experiment
    from testbed.net.capabilities import choose_backend
    from testbed.net.network import terminate_unwinds

    try:
        validate_run_name(name)
        exp = load_experiment(experiment, max_cells=10**9 if yes else None)
        if jobs is not None and jobs < 1:
            raise ConfigError("--jobs", str(jobs), "valid: a whole number >= 1")
        chosen, _ = choose_backend(backend, name)
        _require_root()
        target = out or Path("results") / exp.name
        start = time.monotonic()
        with terminate_unwinds():
            run_experiment(exp, target, jobs or default_jobs(), name, chosen, click.echo)
    except TestbedError as e:
        _fail(e)
    except KeyboardInterrupt:
        click.echo("testbed: interrupted; finished cells are kept, rerun to continue", err=True)
        sys.exit(130)
    click.echo(f"done in {time.monotonic() - start:.0f} s: {target}  (next: testbed plot {target})")


def _configs(results: Path) -> Any:
    from testbed.analysis.load import load_frames
    from testbed.analysis.metrics import cell_table, config_table

    return config_table(cell_table(load_frames(results)))


@cli.command()
@click.argument("results", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--csv", "csv_out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option(
    "--by", default=None, help="fec | abr | nack | roi: side-by-side tables per loss rate"
)
@click.option(
    "--metric", default="p95", show_default=True, help="with --by: p50 | p95 | p99 | mean"
)
def report(results: Path, csv_out: Path | None, by: str | None, metric: str) -> None:
    """Per configuration: achieved bitrate, frames, completion, latency with 95% CIs, model."""
    import pandas as pd

    from testbed.analysis.metrics import VARIANTS, other_params

    try:
        configs = _configs(results)
    except TestbedError as e:
        _fail(e)
    if by is not None:
        if by not in VARIANTS or by not in configs:
            _fail(
                ConfigError("--by", by, f"valid: {', '.join(VARIANTS)} (a column of these results)")
            )
        from testbed.analysis.metrics import side_by_side

        click.echo(side_by_side(configs, by, metric))
        return
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
    if csv_out:
        configs.to_csv(csv_out, index=False)


@cli.command()
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
    "--by", default=None, help="fec | abr | nack | roi: a panel per loss, a line per variant"
)
@click.option(
    "--timeseries",
    is_flag=True,
    help="RESULTS is a cell folder or a results folder: target vs achieved bitrate, latency and "
    "losses per second, one line per cell",
)
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
) -> None:
    """The Figure 3 view, with the yellow region computed from the data (or --by, --timeseries)."""
    import matplotlib

    matplotlib.use("Agg")  # files only; no display needed
    from testbed.analysis.metrics import VARIANTS, yellow_region
    from testbed.analysis.plots import fig3, roi_figure, save, variants

    if metric not in ("p50", "p95", "p99", "mean"):
        _fail(ConfigError("--metric", metric, "valid: p50, p95, p99, mean"))
    if by is not None and by not in VARIANTS:
        _fail(ConfigError("--by", by, f"valid: {', '.join(VARIANTS)}"))
    budget = response_ms - model_ms
    if timeseries:
        _plot_timeseries(results, out, budget)
        return
    try:
        configs = _configs(results)
    except TestbedError as e:
        _fail(e)
    if by is not None:
        if by not in configs:
            _fail(ConfigError(str(results), by, f"these results have no {by} column"))
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


def _plot_timeseries(results: Path, out: Path | None, budget_ms: float) -> None:
    import json

    from testbed.analysis.plots import save, timeseries
    from testbed.analysis.timeseries import cell_series

    cells = [results] if (results / "frames.parquet").exists() else sorted(
        p for p in (results / "cells").glob("*") if (p / "frames.parquet").exists()
    )  # fmt: skip
    if not cells:
        _fail(
            ConfigError(
                str(results),
                "",
                "no frames.parquet here or in cells/*; give a cell or a results folder",
            )
        )
    series = {}
    for cell in cells:
        meta = json.loads((cell / "cell.json").read_text()) if (cell / "cell.json").exists() else {}
        stream = meta.get("stream", {})
        label = ", ".join(f"{k.removeprefix('stream.')}={v}" for k, v in meta.get("params", {}).items()
                          if k != "repetition") or f"{stream.get('abr', 'fixed')} {cell.name}"  # fmt: skip
        series[label] = cell_series(cell)
    target = out or (results.parent / f"{results.name}-timeseries.pdf")
    paths = save(timeseries(series, budget_ms), target)
    click.echo("figure: " + ", ".join(str(p) for p in paths))


@cli.group()
def bench() -> None:
    """Benchmarks that print measured numbers next to references from the same run."""


@bench.command(name="link")
@click.option("--backend", default="emu", show_default=True, help="backend(s), comma-separated")
@click.option("--quick", is_flag=True, help="shorter runs (a smoke test of the benchmark)")
@click.option(
    "--max-rate-mbps",
    default="10,50,100,200",
    show_default=True,
    help="rates tried for the highest sustained rate",
)
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@_name_option("tbb")
def bench_link(
    backend: str, quick: bool, max_rate_mbps: str, json_out: Path | None, name: str
) -> None:
    """Measure the emulated link with iperf3, ping and a timestamped UDP probe."""
    from testbed.bench.link import run_link_bench

    _require_root()
    rates = _numbers("--max-rate-mbps", max_rate_mbps)
    try:
        results = run_link_bench(
            backends=backend.split(","), run=name, quick=quick, rates_mbps=rates, say=click.echo
        )
    except TestbedError as e:
        _fail(e)
    if json_out:
        json_out.write_text(json.dumps(results, indent=1))


@bench.command(name="floor")
@click.option("--bitrates", default="0.5,1,2,4,8", show_default=True, help="Mbps, comma-separated")
@click.option("--seconds", type=float, default=20.0, show_default=True)
@click.option("--no-video", is_flag=True, help="skip the 720p VP8 CPU run")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@_name_option("tbf")
def bench_floor(
    bitrates: str, seconds: float, no_video: bool, json_out: Path | None, name: str
) -> None:
    """Frame latency vs the physical floor on a lossless link, wire vs hook timing, CPU."""
    from testbed.bench.floor import run_floor_bench

    _require_root()
    rates = _numbers("--bitrates", bitrates)
    try:
        rows = run_floor_bench(name, rates, seconds, click.echo, video=not no_video)
    except TestbedError as e:
        _fail(e)
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1))


@bench.command(name="roi")
@click.option(
    "--video", default="builtin:scene", show_default=True, help="a video file or builtin:scene"
)
@click.option("--regions", "regions_path", default=None, help="regions file [the built-in scene's]")
@click.option("--width", type=int, default=1280, show_default=True)
@click.option("--height", type=int, default=720, show_default=True)
@click.option("--frames", type=int, default=150, show_default=True)
@click.option("--bitrate-mbps", type=float, default=1.5, show_default=True)
@click.option(
    "--scorer",
    default="oracle",
    show_default=True,
    help="oracle | saliency | clip | package.module:Class",
)
@click.option("--crf", type=int, default=28, show_default=True)
@click.option("--question", default="what is written on the document?", show_default=True)
@click.option(
    "--encoder",
    type=click.Choice(["x264", "x265"]),
    default="x264",
    show_default=True,
    help="x264: the live path's encoder; x265: HEVC with its lookahead, as the paper encoded",
)
def bench_roi(video: str, regions_path: str | None, width: int, height: int, frames: int,
              bitrate_mbps: float, scorer: str, crf: int, question: str, encoder: str) -> None:  # fmt: skip
    """Offline: uniform vs ROI encoding of a clip, at one bitrate and at one CRF: bitrate and
    PSNR inside / outside the relevant region, encoder and scorer time per frame."""
    import tempfile

    from testbed.roi.offline import Clip, compare
    from testbed.roi.regions import load_regions
    from testbed.roi.scene import BUILTIN_SCENE, scene_regions
    from testbed.roi.spec import parse_roi

    try:
        with tempfile.TemporaryDirectory() as tmp:
            if regions_path is None:
                if video != BUILTIN_SCENE:
                    raise ConfigError(
                        "--regions", "", "a video file needs its regions file (the relevant region)"
                    )
                regions_path = f"{tmp}/scene.regions.json"
                Path(regions_path).write_text(json.dumps(scene_regions(width, height)))
            spec = parse_roi({"scorer": scorer, "regions": regions_path, "crf": crf, "question": question},
                             "bench roi", width, height)  # fmt: skip
            regions = load_regions(regions_path, width, height)
            vid = None if video == BUILTIN_SCENE else video
            clip = Clip(vid, width, height, 30.0, frames, regions)
            results = compare(clip, bitrate_mbps, spec, encoder)
    except TestbedError as e:
        _fail(e)
    click.echo(
        f"{video} {width}x{height}, {frames} frames at 30 fps (first 30 not counted), "
        f"scorer {scorer}, encoder {encoder}"
    )
    click.echo(
        f"{'rate control':<22}{'encoding':<10}{'Mbps':>7}{'PSNR roi':>10}{'PSNR bg':>9}{'enc ms':>8}{'score ms':>9}"
    )
    for r in results:
        rc = f"bitrate {bitrate_mbps:g} Mbps" if r.rate_control == "bitrate" else f"crf {crf}"
        click.echo(f"{rc:<22}{'ROI' if r.enabled else 'uniform':<10}{r.bitrate_mbps:>7.3f}"
                   f"{r.psnr_roi_db:>10.2f}{r.psnr_bg_db:>9.2f}{r.encode_ms:>8.1f}{r.scorer_ms:>9.1f}")  # fmt: skip
    for a, b in ((results[0], results[1]), (results[2], results[3])):
        click.echo(f"{a.rate_control}: ROI vs uniform: relevant {b.psnr_roi_db - a.psnr_roi_db:+.1f} dB, "
                   f"background {b.psnr_bg_db - a.psnr_bg_db:+.1f} dB, bitrate {100 * (b.bitrate_mbps / a.bitrate_mbps - 1):+.0f}%")  # fmt: skip


@cli.group()
def roi() -> None:
    """Context-aware video helpers."""


@roi.command(name="regions")
@click.option("--width", type=int, default=1280, show_default=True)
@click.option("--height", type=int, default=720, show_default=True)
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def roi_regions(width: int, height: int, out: Path) -> None:
    """Write the built-in scene's regions file (the document, with the camera shake's margin)."""
    from testbed.roi.scene import scene_regions

    out.write_text(json.dumps(scene_regions(width, height), indent=1) + "\n")
    click.echo(f"wrote {out}")


def main() -> None:
    cli(prog_name="testbed")


if __name__ == "__main__":
    main()
