"""The AI viewer's commands: judge cells, write a built-in scene's questions, run DeViBench."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from testbed.cli.common import fail, numbers
from testbed.errors import ConfigError, TestbedError


def _params(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    try:
        value = json.loads(text)
    except ValueError as e:
        fail(ConfigError("--params", text, f"not JSON ({e}); e.g. '{{\"psm\": 6}}'"))
    if not isinstance(value, dict):
        fail(ConfigError("--params", text, "expected a JSON object"))
    return value


@click.command()
@click.argument("path", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option(
    "--judge", default=None, help="ocr | markers | mllm | package.module:Class [the cell's]"
)
@click.option("--params", default=None, help="the judge's parameters, as JSON")
@click.option("--force", is_flag=True, help="judge again a cell this judge already scored")
def judge(path: Path, judge: str | None, params: str | None, force: bool) -> None:
    """Score what the AI viewer took in a cell (or every cell of a results folder)."""
    from tqdm import tqdm

    from testbed.viewer.judging import judge_cell

    cells = [path] if (path / "cell.json").exists() else sorted(
        p for p in (path / "cells").glob("*") if (p / "cell.json").exists() and not p.name.startswith(".")
    )  # fmt: skip
    if not cells:
        fail(
            ConfigError(
                str(path), "", "no cell.json here or in cells/*; give a cell or a results folder"
            )
        )
    try:
        for cell in tqdm(cells, unit="cell", disable=len(cells) == 1):
            result = judge_cell(cell, judge, _params(params), force=force)
            if result is None:
                click.echo(f"{cell.name}: no questions (a video file needs viewer.questions)")
                continue
            a = result["all"]
            click.echo(f"{cell.name}: {result['judge']}: {a['correct']}/{a['questions']} right "
                       f"({a['accuracy']:.2f}, 95% [{a['ci95'][0]:.2f}, {a['ci95'][1]:.2f}]), "
                       f"{a['failed']} failed, {result['frames_taken']} frames")  # fmt: skip
    except TestbedError as e:
        fail(e)


@click.command(name="questions")
@click.argument("scene", type=click.Choice(["builtin:document", "builtin:markers"]))
@click.option("--width", type=int, default=1280, show_default=True)
@click.option("--height", type=int, default=720, show_default=True)
@click.option("-o", "--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option(
    "--regions",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="also write the scene's regions file (the oracle ROI scorer's input)",
)
def questions(scene: str, width: int, height: int, out: Path, regions: Path | None) -> None:
    """Write a built-in scene's question file (DeViBench's CSV + ground truth and boxes)."""
    from testbed.roi.scenes import scene as make_scene
    from testbed.viewer.questions import write_questions
    from testbed.viewer.scenes import builtin_questions

    qs = builtin_questions(scene, width, height)
    write_questions(out, qs)
    click.echo(f"wrote {len(qs)} questions to {out}")
    if regions is not None:
        regions.write_text(json.dumps(make_scene(scene, width, height).regions(), indent=1) + "\n")
        click.echo(f"wrote {regions}")


@click.command()
@click.option(
    "--questions",
    "questions_path",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="DeViBench's datasets.csv (or a file of the same columns)",
)
@click.option(
    "--videos",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="StreamingBench's videos: DIR/<sample_folder>.mp4 or DIR/<sample_folder>/*.mp4",
)
@click.option("--bitrates", default="0.2,0.5,1", show_default=True, help="Mbps, comma-separated")
@click.option(
    "--roi",
    "rois",
    default="uniform",
    show_default=True,
    help="uniform and/or a scorer: uniform,saliency (context-aware with that scorer)",
)
@click.option("--judge", "judge_name", default="ocr", show_default=True)
@click.option("--params", default=None, help="the judge's parameters, as JSON")
@click.option("--task-type", "task_types", multiple=True, help="only these task types")
@click.option("--limit", type=int, default=None, help="at most this many questions")
@click.option("--width", type=int, default=1280, show_default=True)
@click.option("--height", type=int, default=720, show_default=True)
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="CSV of every answer [results/devibench.csv]",
)
def devibench(questions_path: Path, videos: Path, bitrates: str, rois: str, judge_name: str,
              params: str | None, task_types: tuple[str, ...], limit: int | None, width: int,
              height: int, out: Path | None) -> None:  # fmt: skip
    """Run DeViBench offline: each question's 5 s segment, encoded at each bitrate (uniform or
    ROI), sampled and resized as a model takes it, answered by the judge; accuracy per task type."""
    from testbed.viewer.devibench import DevibenchRun, run_devibench

    try:
        job = DevibenchRun(questions_path, videos, numbers("--bitrates", bitrates),
                           [r for r in rois.split(",") if r], judge_name, _params(params),
                           list(task_types), limit, width, height)  # fmt: skip
        table = run_devibench(job, say=click.echo)
    except TestbedError as e:
        fail(e)
    target = out or Path("results") / "devibench.csv"
    target.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(target, index=False)
    click.echo(f"answers: {target}")
