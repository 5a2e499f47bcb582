from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from testbed.analysis.metrics import bootstrap_ci, side_by_side, yellow_region
from testbed.errors import ConfigError
from testbed.experiment.spec import load_experiment
from testbed.models.latency import (
    LinkModelInput,
    latency_quantile_ms,
    p_frame_hit,
    packets_per_frame,
)
from tests.conftest import ROOT


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "exp.yaml"
    p.write_text(f"topology: {ROOT / 'topologies' / 'p2p.yaml'}\n" + text)
    return p


def test_fig3_is_the_papers_grid() -> None:
    exp = load_experiment(ROOT / "experiments" / "fig3.yaml")
    assert exp.grid["stream.bitrate_mbps"][-1] > 10 and len(exp.grid["stream.bitrate_mbps"]) >= 10
    assert exp.grid["uplink.loss_pct"] == [0, 1, 2, 5, 10]
    assert len(exp.cells) == 10 * 5 * 3
    cell = exp.cells[0]
    assert cell.topology.links[0].uplink.rate_mbps == 10 and cell.stream.fps == 30


def test_grid_expands_with_stable_ids_and_params(tmp_path: Path) -> None:
    p = write(
        tmp_path, "grid: {stream.bitrate_mbps: [1, 2], uplink.loss_pct: [0, 5]}\nrepetitions: 2\n"
    )
    a, b = load_experiment(p), load_experiment(p)
    assert len(a.cells) == 8 and [c.cell_id for c in a.cells] == [c.cell_id for c in b.cells]
    assert len({c.cell_id for c in a.cells}) == 8
    c = a.cells[-1]
    assert c.params == {"stream.bitrate_mbps": 2, "uplink.loss_pct": 5, "repetition": 1}
    assert c.stream.bitrate_mbps == 2 and c.topology.links[0].uplink.loss_pct == 5
    assert len({x.seed for x in a.cells}) == 8


def test_no_grid_is_one_cell(tmp_path: Path) -> None:
    assert len(load_experiment(write(tmp_path, "stream: {duration_s: 2}\n")).cells) == 1


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("grid: {uplink.lossy_pct: [1]}\n", "unknown key"),
        ("grid: {stream.bitrate_mbps: []}\n", "non-empty list"),
        ("grid: {uplink.loss_pct: [1, 150]}\n", "out of range"),
        ("grid: {stream.bitrate_mbps: [1, 2, 3]}\nmax_cells: 2\n", "--yes"),
        ("colour: 1\n", "unknown key"),
        ("repetitions: 0\n", "repetitions"),
    ],
)
def test_bad_experiments(tmp_path: Path, text: str, what: str) -> None:
    with pytest.raises(ConfigError, match=what.replace("-", r"\-")) as e:
        load_experiment(write(tmp_path, text))
    assert e.value.exit_code == 2


def test_model_packets_and_hit_probability() -> None:
    assert packets_per_frame(0.25, 30) == 1 and packets_per_frame(8, 30) == 26
    assert p_frame_hit(1, 8, 30) == pytest.approx(1 - 0.99**26)
    link = LinkModelInput(10, 30, 30, 0)
    assert latency_quantile_ms(link, 2, 30, 0.95) == pytest.approx(
        30 + (8333 + 7 * 68) * 8 / 1e4, rel=1e-4
    )
    assert math.isinf(latency_quantile_ms(link, 12, 30, 0.5))
    lossy = LinkModelInput(10, 30, 30, 5)
    # 1 packet per frame at 5% loss: p95 just reaches a retransmission round; 26 packets: surely
    assert latency_quantile_ms(lossy, 8, 30, 0.95) > latency_quantile_ms(lossy, 0.25, 30, 0.95)


def test_bootstrap_ci() -> None:
    assert bootstrap_ci(np.array([5.0])) == (5.0, 5.0)
    lo, hi = bootstrap_ci(np.array([1.0, 2.0, 3.0]))
    assert 1.0 <= lo < 2.0 < hi <= 3.0


def test_yellow_region() -> None:
    configs = pd.DataFrame({
        "bitrate_mbps": [0.5, 1, 4, 0.5, 1, 4],
        "achieved_mbps": [0.5, 1, 4, 0.5, 1, 4],
        "loss_pct": [0, 0, 0, 2, 2, 2],
        "latency_p95_ms": [40, 45, 60, 50, 90, 120],
    })  # fmt: skip
    assert yellow_region(configs, "p95", 68) == (0.5, 0.5, 2.0)
    assert yellow_region(configs, "p95", 68, max_loss_pct=0) == (0.5, 4.0, 0.0)
    assert yellow_region(configs, "p95", 10) is None


def test_nested_stream_keys_in_grids(tmp_path: Path) -> None:
    exp = tmp_path / "e.yaml"
    exp.write_text(
        f"topology: {ROOT / 'topologies' / 'p2p.yaml'}\n"
        "stream: {fec: {scheme: rs, overhead: 0.2}}\n"
        "grid: {stream.fec.overhead: [0.2, 0.5], stream.abr: [fixed, budget]}\n"
    )
    cells = load_experiment(exp).cells
    assert sorted((c.stream.fec["overhead"], c.stream.abr) for c in cells) == [
        (0.2, "budget"), (0.2, "fixed"), (0.5, "budget"), (0.5, "fixed")]  # fmt: skip
    assert all(c.stream.fec["scheme"] == "rs" for c in cells)


def test_side_by_side_marks_the_budget() -> None:
    configs = pd.DataFrame({
        "loss_pct": [2.0] * 4, "fec": ["none", "none", "rs 20%", "rs 20%"],
        "bitrate_mbps": [1.0, 4.0, 1.0, 4.0], "latency_p95_ms": [95.0, 113.0, 34.0, 45.0],
        "fec_overhead_pct": [0, 0, 30.0, 22.0], "rtx_overhead_pct": [2.0, 3.0, 0.1, 0.2],
    })  # fmt: skip
    text = side_by_side(configs, "fec")
    rows = {line.split()[0]: line for line in text.splitlines() if line.startswith(("none", "rs"))}
    assert "95.0 (  2.0%)" in rows["none"] and "34.0*( 30.1%)" in rows["rs"]


def test_shipped_experiments_run_from_any_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Files an experiment names (topology, traces, regions) are found beside it, whatever the cwd."""
    monkeypatch.chdir(tmp_path)
    abr = load_experiment(ROOT / "experiments" / "abr-compare.yaml")
    trace = abr.cells[0].topology.links[0].uplink.trace
    assert trace == str(ROOT / "topologies" / "traces" / "step-10-3-10-12s.trace")
    roi = load_experiment(ROOT / "experiments" / "context-aware.yaml")
    regions = roi.cells[0].stream.roi_spec().regions
    assert regions == str(ROOT / "experiments" / "roi" / "scene-1280x720.regions.json")


def test_paths_in_grids_resolve_beside_the_file(tmp_path: Path) -> None:
    (tmp_path / "a.trace").write_text("1\n2\n")
    (tmp_path / "b.trace").write_text("1\n")
    p = tmp_path / "e.yaml"
    p.write_text(f"topology: {ROOT / 'topologies' / 'p2p.yaml'}\n"
                 "set: {uplink.rate_mbps: null}\ngrid: {uplink.trace: [a.trace, b.trace]}\n")  # fmt: skip
    traces = [c.topology.links[0].uplink.trace for c in load_experiment(p).cells]
    assert traces == [str(tmp_path / "a.trace"), str(tmp_path / "b.trace")]
    assert [c.params["uplink.trace"] for c in load_experiment(p).cells] == ["a.trace", "b.trace"]


@pytest.mark.parametrize(
    "path", sorted((ROOT / "experiments").glob("*.yaml")), ids=lambda p: p.name
)
def test_every_shipped_experiment_loads(path: Path) -> None:
    exp = load_experiment(path, max_cells=10_000)
    assert exp.cells and len({c.cell_id for c in exp.cells}) == len(exp.cells)


def test_any_varying_grid_key_is_its_own_configuration() -> None:
    """Cells that differ in a key the report has no name for are not pooled as repetitions."""
    from testbed.analysis.metrics import STATS, config_table

    base = {"bitrate_mbps": 2.0, "loss_pct": 5.0, "rate_mbps": np.nan, "achieved_mbps": 2.0,
            "frames": 100, "completion": 1.0, "retransmissions": 0, "frames_hit": 0.0,
            "delay_ms": 30.0, "reverse_delay_ms": 30.0, "fps": 30.0, "roi": "ROI",
            **{f"latency_{s}_ms": 40.0 for s in STATS}}  # fmt: skip
    cells = pd.DataFrame(
        [{**base, "stream.late_packets": lp, "repetition": r, "latency_p95_ms": p95}
         for lp, p95 in (("aiortc", 200.0), ("drop", 100.0)) for r in (0, 1)]
    )  # fmt: skip
    table = config_table(cells)
    assert list(table["stream.late_packets"]) == ["aiortc", "drop"]
    assert list(table.repetitions) == [2, 2] and list(table.latency_p95_ms) == [200.0, 100.0]
    # a grid value of null (uplink.queue_ms: [null, 300]) is a configuration too, not dropped
    cells["uplink.queue_ms"] = [None, None, 300.0, 300.0]
    table = config_table(cells)
    assert len(table) == 2 and list(table.repetitions) == [2, 2]


@pytest.mark.parametrize("text", ["[0.00001, 0.001]", "[1e-5, 1.0e-3]", "[1E-5, 0.001]"])
def test_exponent_grid_values_are_numbers(tmp_path: Path, text: str) -> None:
    """A grid value travels as a value (never printed and re-read), and YAML 1.2 numbers are
    numbers: 1e-5 was refused as "'1e-05' is not a number" before."""
    exp = load_experiment(write(tmp_path, f"grid: {{uplink.loss_pct: {text}}}\n"))
    assert [c.topology.links[0].uplink.loss_pct for c in exp.cells] == [1e-5, 1e-3]


def test_a_non_number_in_a_grid_is_still_one_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'5%' is not a number") as e:
        load_experiment(write(tmp_path, "grid: {uplink.loss_pct: [1, 5%]}\n"))
    assert e.value.key == "links.p2p.uplink.loss_pct" or "loss_pct" in e.value.key


def test_a_cell_job_reads_back_to_the_same_specs(tmp_path: Path) -> None:
    """What a cell runs is what the experiment resolved: to_dict -> validated again -> equal."""
    from testbed.config import topology_from_dict
    from testbed.rtc.spec import parse_stream

    exp = load_experiment(write(tmp_path, "stream: {nack: retry, fec: rs}\n"
                                "grid: {uplink.loss_pct: [2], downlink.delay_ms: [5]}\n"))  # fmt: skip
    cell = exp.cells[0]
    topo = topology_from_dict(cell.topology.to_dict(), cell.topology.source)
    assert topo == cell.topology
    assert parse_stream(cell.stream.to_dict(), "job") == cell.stream
    assert cell.stream.options["nack"] == "retry" and cell.stream.fec["scheme"] == "rs"


def test_every_shipped_experiment_keeps_working() -> None:
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        exp = load_experiment(path, max_cells=10**6)
        assert exp.cells and all(c.stream.stack in ("aiortc", "chromium") for c in exp.cells), path
        if "chromium" in path.stem:  # the Chromium experiments send with it
            assert all(c.stream.stack_of("sender") == "chromium" for c in exp.cells), path


def test_a_malformed_flow_aimed_off_the_stream_is_refused_up_front(tmp_path: Path) -> None:
    topo = tmp_path / "three.yaml"
    topo.write_text("""name: three
hosts: [sender, receiver, other]
links:
  - {name: path, between: [sender, receiver], uplink: {rate_mbps: 10}, downlink: {rate_mbps: 10}}
  - {name: side, between: [receiver, other], uplink: {rate_mbps: 10}, downlink: {rate_mbps: 10}}
cross_traffic:
  - {name: junk, from: sender, to: other, kind: malformed, rate_pps: 10}
""")
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"topology: {topo}\n")
    with pytest.raises(ConfigError, match=r"cross_traffic.junk.to.*valid: sender, receiver") as e:
        load_experiment(exp)
    assert e.value.exit_code == 2


def test_a_grid_over_whole_stream_mappings_and_a_curve_beside_the_file(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text(
        "roi,achieved_mbps,accuracy\nuniform,0.1,0.2\nuniform,0.5,0.9\n"
    )
    exp = load_experiment(write(tmp_path, (
        "grid:\n  stream:\n    - {abr: remb}\n"
        "    - {abr: accuracy_cap, abr_params: {curve: c.csv, threshold: 0.8}}\n")))  # fmt: skip
    assert [c.stream.abr for c in exp.cells] == ["remb", "accuracy_cap"]
    assert exp.cells[1].stream.abr_params["curve"] == str(tmp_path / "c.csv")
    assert str(tmp_path / "c.csv") in exp.inputs  # shipped to workers by content, in the digest
    with pytest.raises(ConfigError, match=r"grid\.stream"):
        load_experiment(write(tmp_path, "grid: {stream: [remb]}\n"))
