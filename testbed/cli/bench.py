"""Benchmarks that print measured numbers next to references from the same run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from testbed.cli.common import fail, name_option, numbers, require_root
from testbed.errors import ConfigError, TestbedError


@click.group()
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
@click.option(
    "--schedule",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="a schedule (or OpenNetLab / cooked trace): per segment, delivered rate, "
    "one-way delay and loss against it (e.g. topologies/schedules/bench.yaml)",
)
@click.option(
    "--load",
    is_flag=True,
    help="the emulator under load instead: CPU per direction, precision and delivery at each "
    "--load-rates rate, then offered 2x its highest precise rate",
)
@click.option(
    "--load-rates", default="2,10,100,300,600,1000", show_default=True, help="rates for --load"
)
@click.option(
    "--loops",
    default="compiled",
    show_default=True,
    help="emulator loops for --load: compiled, python (the reference loop), tickN (the "
    "compiled loop waking for releases at most every N us), comma-separated",
)
@name_option("tbb")
def bench_link(
    backend: str,
    quick: bool,
    max_rate_mbps: str,
    json_out: Path | None,
    schedule: Path | None,
    load: bool,
    load_rates: str,
    loops: str,
    name: str,
) -> None:
    """Measure the emulated link with iperf3, ping and a timestamped UDP probe."""
    from testbed.bench.link import run_link_bench

    if load:
        from testbed.bench.load import run_load_bench, valid_loop

        chosen = [x.strip() for x in loops.split(",") if x.strip()]
        bad = [x for x in chosen if not valid_loop(x)] or ([] if chosen else [loops])
        if bad:
            fail(ConfigError("--loops", bad[0], "valid: compiled, python, tickN (N us)"))
        rates = numbers("--load-rates", load_rates)
        require_root()
        try:
            out = run_load_bench(name, chosen, rates, quick, click.echo)
        except TestbedError as e:
            fail(e)
        from testbed.shaping.ceiling import save_result

        save_result(out, json_out)
        return
    require_root()
    if schedule is not None:
        from testbed.bench.schedule import run_schedule_bench

        try:
            rows = run_schedule_bench(schedule, backend.split(","), name, click.echo)
        except TestbedError as e:
            fail(e)
        if json_out:
            json_out.write_text(json.dumps(rows, indent=1))
        return
    rates = numbers("--max-rate-mbps", max_rate_mbps)
    try:
        results = run_link_bench(
            backends=backend.split(","), run=name, quick=quick, rates_mbps=rates, say=click.echo
        )
    except TestbedError as e:
        fail(e)
    if json_out:
        json_out.write_text(json.dumps(results, indent=1))


@bench.command(name="floor")
@click.option("--bitrates", default="0.5,1,2,4,8", show_default=True, help="Mbps, comma-separated")
@click.option("--seconds", type=float, default=20.0, show_default=True)
@click.option("--no-video", is_flag=True, help="skip the 720p VP8 CPU run")
@click.option("--stack", default="aiortc", show_default=True, help="aiortc | chromium")
@click.option("--stream-set", "stream_sets", multiple=True, metavar="KEY=VALUE",
              help="another stream key for every session (e.g. pacing_factor=100)")  # fmt: skip
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@name_option("tbf")
def bench_floor(
    bitrates: str, seconds: float, no_video: bool, stack: str, stream_sets: tuple[str, ...],
    json_out: Path | None, name: str,
) -> None:  # fmt: skip
    """Frame latency vs the physical floor on a lossless link, wire vs hook timing, CPU."""
    from testbed.bench.floor import run_floor_bench
    from testbed.config import parse_set
    from testbed.rtc.spec import parse_stream, set_key

    rates = numbers("--bitrates", bitrates)
    extra: dict[str, Any] = {"stack": stack}
    try:
        for item in stream_sets:
            set_key(extra, *parse_set(item))
        parse_stream(extra, "--stream-set")  # bad input: one line, before anything starts
    except TestbedError as e:
        fail(e)
    require_root()
    try:
        rows = run_floor_bench(name, rates, seconds, click.echo, video=not no_video, extra=extra)
    except TestbedError as e:
        fail(e)
    if json_out:
        json_out.write_text(json.dumps(rows, indent=1))


@bench.command(name="reaction")
@click.argument("results", type=click.Path(file_okay=False, exists=True, path_type=Path))
def bench_reaction(results: Path) -> None:
    """How fast each stack's encoder output follows a controller's steps (a cell, or every cell
    of a results folder run with e.g. abr: steps): median reaction per direction."""
    from testbed.bench.reaction import reaction_summary

    cells = [results] if (results / "cell.json").exists() else sorted(
        p for p in (results / "cells").glob("*") if (p / "cell.json").exists())  # fmt: skip
    try:
        table = reaction_summary(cells)
    except TestbedError as e:
        fail(e)
    click.echo(table.to_string(index=False, float_format=lambda x: f"{x:.2f}"))


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
    from testbed.roi.scorers import check_scorer
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
            check_scorer(spec, "bench roi", "stream.roi")
            regions = load_regions(regions_path, width, height)
            vid = None if video == BUILTIN_SCENE else video
            clip = Clip(vid, width, height, 30.0, frames, regions)
            results = compare(clip, bitrate_mbps, spec, encoder)
    except TestbedError as e:
        fail(e)
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


@bench.command(name="viewer")
@click.option(
    "--scene",
    default="builtin:document",
    show_default=True,
    type=click.Choice(["builtin:document", "builtin:markers"]),
)
@click.option("--bitrates", default="0.1,0.2,0.4,0.8", show_default=True, help="Mbps")
@click.option("--judge", "judge_name", default=None, help="[ocr for the document, markers]")
@click.option("--width", type=int, default=1280, show_default=True)
@click.option("--height", type=int, default=720, show_default=True)
@click.option("--frames", type=int, default=150, show_default=True)
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None)
def bench_viewer(scene: str, bitrates: str, judge_name: str | None, width: int, height: int,
                 frames: int, json_out: Path | None) -> None:  # fmt: skip
    """Offline: task accuracy vs bitrate, uniform vs ROI (oracle), on a built-in scene; the
    bitrate at which each reaches 90% of its top accuracy, and their ratio."""
    import tempfile

    import pandas as pd

    from testbed.roi.offline import Clip
    from testbed.roi.regions import load_regions
    from testbed.roi.scenes import scene as make_scene
    from testbed.roi.spec import RoiSpec
    from testbed.viewer.judges import make_judge
    from testbed.viewer.offline import Encodings, bitrate_at_share, evaluate
    from testbed.viewer.scenes import builtin_questions
    from testbed.viewer.spec import ViewerSpec

    rates = numbers("--bitrates", bitrates)
    try:
        s = make_scene(scene, width, height)
        name = judge_name or ("ocr" if s.kind == "document" else "markers")
        judge = make_judge(name, None, "--judge")
        with tempfile.TemporaryDirectory() as tmp:
            path = f"{tmp}/regions.json"
            Path(path).write_text(json.dumps(s.regions()))
            clip = Clip(scene, width, height, 30.0, frames, load_regions(path, width, height))
            click.echo(f"{scene} {width}x{height}, {frames} frames, judge {name}, viewer 2 fps "
                       "(Qwen2.5-VL resize), oracle ROI from the scene's region")  # fmt: skip
            both = Encodings(rates, RoiSpec(scorer="oracle", regions=path))
            points = evaluate(clip, builtin_questions(scene, width, height), both, judge,
                              ViewerSpec(enabled=True), say=click.echo)  # fmt: skip
    except TestbedError as e:
        fail(e)
    table = pd.DataFrame([p.row() for p in points])
    at = bitrate_at_share(table)
    ratio = at.get("ROI", float("nan")) / at.get("uniform", float("nan"))
    click.echo(
        f"90% of top accuracy at: uniform {at.get('uniform', float('nan')):.3f} Mbps, "
        f"ROI {at.get('ROI', float('nan')):.3f} Mbps (ROI / uniform = {ratio:.2f})"
    )
    if json_out:
        json_out.write_text(json.dumps({"points": table.to_dict("records"), "at_90pct": at,
                                        "ratio": ratio}, indent=1, default=str))  # fmt: skip


@bench.command(name="sweep")
@click.option("--cells", type=int, default=4, show_default=True, help="cells for the overhead")
@name_option()
def bench_sweep_cmd(cells: int, name: str) -> None:
    """The executor's overhead per cell (the same cells run directly, through the embedded
    cluster, through a scheduler and a worker) and two workers against one."""
    from testbed.bench.sweep import bench_sweep

    require_root()
    if cells < 1:
        fail(ConfigError("--cells", str(cells), "valid: a whole number >= 1"))
    result = bench_sweep(name, lambda line: click.echo(line, err=True), cells=cells)
    click.echo("\n".join(result.lines()))


@bench.command(name="queues")
@click.option("--seconds", type=int, default=20, show_default=True, help="each flow's length")
@click.option("--json-out", type=click.Path(dir_okay=False, path_type=Path), default=None)
@name_option("tbq")
def bench_queues_cmd(seconds: int, json_out: Path | None, name: str) -> None:
    """The queue disciplines under one TCP cubic flow (queueing delay, throughput, drops, ECN
    marks) and the emulator's CPU with FQ-CoDel against droptail at 10 and 100 Mbps."""
    from testbed.bench.queues import run_queue_bench

    if seconds < 5:
        fail(ConfigError("--seconds", str(seconds), "valid: a whole number >= 5"))
    require_root()
    try:
        out = run_queue_bench(seconds, name, click.echo)
    except TestbedError as e:
        fail(e)
    if json_out:
        json_out.write_text(json.dumps(out, indent=1))
