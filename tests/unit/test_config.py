from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from testbed.config import apply_overrides, load_topology, parse_topology, validate_run_name
from testbed.errors import ConfigError
from tests.conftest import ROOT

P2P = ROOT / "topologies" / "p2p.yaml"


def test_p2p_is_the_papers_setup() -> None:
    topo = load_topology(P2P)
    assert topo.hosts == ("sender", "receiver")
    (link,) = topo.links
    assert link.between == ("sender", "receiver")
    for spec in (link.uplink, link.downlink):
        assert (spec.rate_mbps, spec.delay_ms, spec.loss_pct) == (10, 30, 0)


def test_set_overrides_one_direction() -> None:
    topo = load_topology(P2P, ["uplink.loss_pct=2", "path.downlink.delay_ms=5", "seed=7"])
    assert topo.links[0].uplink.loss_pct == 2
    assert topo.links[0].downlink.delay_ms == 5
    assert topo.links[0].downlink.loss_pct == 0
    assert topo.seed == 7


def _write(tmp_path: Path, data: object) -> Path:
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


BASE = {
    "hosts": ["a", "b"],
    "links": [{"name": "l", "between": ["a", "b"], "uplink": {"rate_mbps": 10}}],
}


@pytest.mark.parametrize(
    ("sets", "key", "what"),
    [
        (["uplink.lossy_pct=2"], "links.l.uplink.lossy_pct", "unknown key"),
        (["uplink.rate_mbps=-1"], "links.l.uplink.rate_mbps", "out of range"),
        (["uplink.loss_pct=150"], "links.l.uplink.loss_pct", "valid: [0, 100]"),
        (["uplink.delay_ms=30ms"], "links.l.uplink.delay_ms", "not a number"),
        (
            ["uplink.rate_mbps=null", "uplink.trace=/nonexistent.trace"],
            "links.l.uplink.trace",
            "/nonexistent.trace: trace file not found",
        ),
        (["backend=quantum"], "backend", "valid: auto, emu, netem"),
        (["uplink.rate_mbps=true"], "links.l.uplink.rate_mbps", "not a number"),
        (["uplink.queue_packets=0"], "links.l.uplink.queue_packets", ">= 1"),
        (["uplink.gilbert_elliott.p_pct=1"], "links.l.uplink.gilbert_elliott.r_pct", "missing"),
        (
            ["uplink.queue=red"],
            "links.l.uplink.queue.discipline",
            "valid: droptail, drophead, codel",
        ),
        (
            ["uplink.queue={discipline: codel, tupdate_ms: 5}"],
            "links.l.uplink.queue.tupdate_ms",
            "not a parameter of codel; valid: discipline, target_ms, interval_ms",
        ),
        (
            ["uplink.queue={discipline: pie, target_ms: 0}"],
            "links.l.uplink.queue.target_ms",
            "valid: (0, 10000]",
        ),
        (
            ["uplink.queue={discipline: codel, interval_ms: -5}"],
            "links.l.uplink.queue.interval_ms",
            "out of range",
        ),
        (
            ["uplink.rate_mbps=null", "uplink.queue_ms=300"],
            "links.l.uplink.queue_ms",
            "needs a capacity",
        ),
        (["uplink.ecn=true"], "links.l.uplink.ecn", "droptail never marks"),
        (
            ["uplink.queue=drophead", "uplink.ecn=true"],
            "links.l.uplink.ecn",
            "codel | pie | fq_codel",
        ),
        (
            ["uplink.queue=codel", "uplink.ecn=yes please"],
            "links.l.uplink.ecn",
            "not true or false",
        ),
        (
            ["uplink.queue={discipline: fq_codel, flows: 0}"],
            "links.l.uplink.queue.flows",
            "1 to 65536",
        ),
    ],
)
def test_bad_input_names_file_key_and_valid(
    tmp_path: Path, sets: list[str], key: str, what: str
) -> None:
    path = _write(tmp_path, BASE)
    with pytest.raises(ConfigError) as e:
        load_topology(path, sets)
    assert what in str(e.value)
    assert e.value.key == key
    assert e.value.exit_code == 2


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "broken.yaml"
    p.write_text("hosts: [a, b\nlinks: x\n")
    with pytest.raises(ConfigError, match="malformed YAML") as e:
        load_topology(p)
    assert "broken.yaml" in str(e.value)


def test_trace_and_rate_exclusive(tmp_path: Path) -> None:
    trace = ROOT / "topologies" / "traces" / "const-5.trace"
    with pytest.raises(ConfigError, match="either rate_mbps or trace"):
        load_topology(_write(tmp_path, BASE), [f"uplink.trace={trace}"])


def test_trace_resolves_relative_to_topology_file(tmp_path: Path) -> None:
    (tmp_path / "tr.trace").write_text("1\n2\n3\n")
    data = {
        "hosts": ["a", "b"],
        "links": [{"between": ["a", "b"], "uplink": {"trace": "tr.trace"}}],
    }
    topo = load_topology(_write(tmp_path, data))
    assert topo.links[0].uplink.trace == str(tmp_path / "tr.trace")


def test_malformed_trace_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "bad.trace").write_text("5\n3\n")
    data = {
        "hosts": ["a", "b"],
        "links": [{"between": ["a", "b"], "uplink": {"trace": "bad.trace"}}],
    }
    with pytest.raises(ConfigError) as e:
        load_topology(_write(tmp_path, data))
    assert e.value.key == "links.0.uplink.trace" or e.value.key.endswith(".uplink.trace")
    assert "bad.trace: line 2: 3 comes after 5" in str(e.value)


def test_ambiguous_set_with_two_links() -> None:
    raw = {
        "hosts": ["a", "b", "c"],
        "links": [{"name": "x", "between": ["a", "b"]}, {"name": "y", "between": ["b", "c"]}],
    }
    with pytest.raises(ConfigError, match=r"x\.uplink\.loss_pct"):
        apply_overrides(raw, [("uplink.loss_pct", 1)])
    out = apply_overrides(raw, [("y.uplink.loss_pct", 1)])
    assert out["links"][1]["uplink"]["loss_pct"] == 1


@given(st.floats(allow_nan=False, allow_infinity=False, min_value=-1e6, max_value=1e6))
def test_loss_pct_valid_iff_percentage(loss: float) -> None:
    raw = {"hosts": ["a", "b"], "links": [{"between": ["a", "b"], "uplink": {"loss_pct": loss}}]}
    if 0 <= loss <= 100:
        assert parse_topology(raw, "h.yaml", Path(".")).links[0].uplink.loss_pct == loss
    else:
        with pytest.raises(ConfigError, match="out of range"):
            parse_topology(raw, "h.yaml", Path("."))


@given(st.text(max_size=10))
def test_run_names_fit_interface_names(name: str) -> None:
    try:
        validate_run_name(name)
    except ConfigError:
        return
    assert len(f"{name}-99ra") <= 15


def test_emulator_tick_is_a_topology_key_checked_once() -> None:
    raw = {"name": "t", "hosts": ["a", "b"], "links": [{"name": "l", "between": ["a", "b"]}]}
    here = Path(".")
    topo = parse_topology(apply_overrides(raw, [("emulator_tick_us", 1000)]), "t.yaml", here)
    assert topo.emulator_tick_us == 1000.0 and topo.to_dict()["emulator_tick_us"] == 1000.0
    assert "emulator_tick_us" not in parse_topology(raw, "t.yaml", here).to_dict()  # same digest
    with pytest.raises(ConfigError, match=r"t.yaml: emulator_tick_us: .*valid"):
        parse_topology({**raw, "emulator_tick_us": -5}, "t.yaml", here)


def test_queue_keys_are_optional_and_keep_the_dict() -> None:
    plain = load_topology(P2P)
    same = load_topology(P2P, ["uplink.queue=droptail"])
    assert plain.to_dict() == same.to_dict()
    assert "queue" not in plain.links[0].uplink.to_dict()
    topo = load_topology(P2P, ["uplink.queue=codel", "uplink.queue_ms=300", "uplink.ecn=true"])
    up = topo.links[0].uplink
    assert up.queue.discipline == "codel" and up.queue.get("target_ms") == 5.0
    assert (up.queue_ms, up.ecn) == (300, True)
    assert up.to_dict()["queue"] == {"discipline": "codel", "target_ms": 5.0, "interval_ms": 100.0}
    again = load_topology(P2P, ["uplink.queue={discipline: codel, target_ms: 5, interval_ms: 100}",
                                "uplink.queue_ms=300", "uplink.ecn=true"])  # fmt: skip
    assert again.to_dict() == topo.to_dict()  # the name and the mapping are the same queue
    pie = load_topology(P2P, ["uplink.queue={discipline: pie, alpha: 0.25}"]).links[0].uplink
    assert pie.queue.to_dict() == {"discipline": "pie", "target_ms": 15.0, "tupdate_ms": 15.0,
                                   "alpha": 0.25, "beta": 1.25, "max_burst_ms": 150.0}  # fmt: skip
