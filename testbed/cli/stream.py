"""`testbed stream`: one session over a topology, up and down again."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import click

from testbed.cli.common import fail, ms, name_option, require_root
from testbed.errors import ConfigError, TestbedError, interrupt_exit_code


def check_out_free(out: Path) -> None:
    """A stream's folder is written once: OUT must not exist yet, or be an empty folder."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError("-o", str(out), "exists and is not empty; a stream's results are "
                          "written once: choose another folder or remove it")  # fmt: skip


@click.command()
@click.argument("topology", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--bitrate-mbps", type=float, default=4.0, show_default=True)
@click.option("--duration-s", type=float, default=20.0, show_default=True)
@click.option("--source", default="synthetic", show_default=True, help="synthetic | video")
@click.option("--fps", type=float, default=30.0, show_default=True)
@click.option(
    "--codec",
    default=None,
    help="vp8 | h264 (aiortc); vp8 | vp9 | h264 | av1 (chromium) [vp8; roi: h264]",
)
@click.option("--video", default=None, help="video file for --source video [a moving pattern]")
@click.option(
    "--stack",
    default=None,
    help="WebRTC stack of both ends: aiortc | chromium (receiver_stack=... for a mixed pair) [aiortc]",
)
@click.option("--nack", default=None, help="aiortc stack: aiortc | retry | off [aiortc]")
@click.option("--history-packets", type=int, default=None, help="aiortc stack [128]")
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
@name_option()
def stream(
    topology: Path,
    bitrate_mbps: float,
    duration_s: float,
    source: str,
    fps: float,
    codec: str | None,
    video: str | None,
    stack: str | None,
    nack: str | None,
    history_packets: int | None,
    stream_sets: tuple[str, ...],
    backend: str | None,
    sets: tuple[str, ...],
    seed: int | None,
    out: Path,
    name: str,
) -> None:
    """Bring TOPOLOGY up, run one WebRTC session sender -> receiver, tear down, write OUT.

    OUT appears whole (with its cell.json) or not at all: the session writes into a folder
    beside it, renamed to OUT once complete; a failure or a signal removes it."""
    from testbed.config import load_topology, parse_set, validate_run_name
    from testbed.files import publish_folder, remove_dead_staging, staging_folder
    from testbed.net.network import terminate_unwinds
    from testbed.rtc.session import run_stream
    from testbed.rtc.spec import parse_stream, set_key
    from testbed.shaping.backends import resolve_backend

    data: dict[str, Any] = {
        "bitrate_mbps": bitrate_mbps,
        "duration_s": duration_s,
        "source": source,
        "fps": fps,
    }
    for key, value in (("video", video), ("codec", codec), ("stack", stack), ("nack", nack),
                       ("history_packets", history_packets)):  # fmt: skip
        if value is not None:
            data[key] = value
    try:
        for item in stream_sets:
            key, value = parse_set(item)
            set_key(data, key, value)
        validate_run_name(name)
        spec = parse_stream(data, "--stream")
        check_out_free(out)
        topo = load_topology(topology, sets)
        chosen = resolve_backend(backend or topo.backend, name)
        require_root()
        click.echo(
            f"streaming {spec.source} {spec.bitrate_mbps:g} Mbps for {spec.duration_s:g} s "
            f"on {spec.stack_label()} over {topo.name} (backend {chosen.name}) -> {out}"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_dead_staging(out)
        staged = staging_folder(out)
        try:
            with terminate_unwinds():
                result = run_stream(topo, spec, staged, chosen.backend, chosen.reason,
                                    run=name, seed=seed, say=click.echo)  # fmt: skip
                publish_folder(staged, out)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
    except TestbedError as e:
        fail(e)
    except KeyboardInterrupt as e:
        click.echo(f"testbed: interrupted ({e or 'SIGINT'}); the topology was removed and "
                   f"nothing was written to {out}", err=True)  # fmt: skip
        sys.exit(interrupt_exit_code(e))
    several = result.summary.get("sessions") or {"": result.summary}
    for session, s in several.items():
        lat = s["latency_ms"]
        click.echo(
            (f"session {session}: " if session else "")
            + f"frames {s['frames']} (complete {s['complete']}, lost {s['lost']}), achieved "
            f"{s['achieved_mbps']:.3f} Mbps, latency p50/p95/p99 {ms(lat['p50'])}/{ms(lat['p95'])}/"
            f"{ms(lat['p99'])} ms, retransmissions {s['retransmissions']}, "
            f"packets lost on first try {s['packets_lost_first_try']}"
        )
    if "sessions" in result.summary:
        _say_sharing(out)
    click.echo(f"wrote {out}/frames.parquet, cell.json, pcaps and link logs")


def _say_sharing(out: Path) -> None:
    """Jain's index and the convergence after each join or leave (cell.json's `sharing`)."""
    import json

    sh = json.loads((out / "cell.json").read_text())["sharing"]
    if sh.get("jain") is not None:
        lo, hi = sh["window_s"]
        click.echo(f"Jain's index {sh['jain']:.3f} over {lo:g}-{hi:g} s; utilisation "
                   + (f"{sh['utilisation']:.2f}" if sh.get("utilisation") is not None else "n/a"))  # fmt: skip
    for c in sh["convergence"]:
        after = c["converged_after_s"]
        click.echo(f"{c['event']} at {c['at_s']:g} s: " + (f"within 20% of fair after {after:g} s"
                   if after is not None else "never within 20% of fair"))  # fmt: skip
