"""notebooks/fig3.ipynb runs top to bottom (nbclient) against a small real results folder."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from tests.conftest import ROOT
from tests.system.conftest import run_cli

EXP = """name: nb
topology: {topo}
stream: {{source: synthetic, fps: 30, duration_s: 2, drain_s: 0.5}}
grid: {{stream.bitrate_mbps: [1, 3], uplink.loss_pct: [0, 2]}}
"""


def test_fig3_notebook_runs_on_real_results(run: str, tmp_path: Path) -> None:
    exp = tmp_path / "nb.yaml"
    exp.write_text(EXP.format(topo=ROOT / "topologies" / "p2p.yaml"))
    out = tmp_path / "res"
    res = run_cli("run", str(exp), "-o", str(out), "--name", run, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    nb = nbformat.read(ROOT / "notebooks" / "fig3.ipynb", as_version=4)
    os.environ["RESULTS"] = str(out)
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3",
                       resources={"metadata": {"path": str(ROOT / "notebooks")}}).execute()  # fmt: skip
    finally:
        del os.environ["RESULTS"]
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("yellow region" in o.get("text", "") for o in outputs)
    assert any("image/png" in o.get("data", {}) for o in outputs)
