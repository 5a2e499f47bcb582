"""Context-aware video helpers."""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.group()
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
