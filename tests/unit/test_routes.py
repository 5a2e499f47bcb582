"""Static routes from a topology (pure): shortest paths, through router hosts only."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.config import load_topology, parse_topology
from testbed.errors import ConfigError
from testbed.net.routes import compute_routes, endpoint_paths, path, unreachable
from tests.conftest import ROOT


def test_p2p_gets_the_two_routes_it_always_had() -> None:
    routes = compute_routes(load_topology(ROOT / "topologies" / "p2p.yaml"))
    assert [(r.node, r.dst, r.via) for r in routes] == [
        ("host:sender", "10.77.1.0/24", "10.77.0.254"),
        ("host:receiver", "10.77.0.0/24", "10.77.1.254"),
    ]


def test_dumbbell_paths_cross_the_bottleneck_between_sides_only() -> None:
    topo = load_topology(ROOT / "topologies" / "dumbbell.yaml")
    assert path(topo, "s2", "r3") == ["a2", "neck", "b3"]
    assert path(topo, "r3", "s2") == ["b3", "neck", "a2"]
    assert path(topo, "s1", "s3") == ["a1", "a3"]
    assert unreachable(topo) == []
    assert "s1 <-> r1: a1 > neck > b1" in endpoint_paths(topo)


def test_the_parking_lots_flows_cross_one_two_and_three_bottlenecks() -> None:
    topo = load_topology(ROOT / "topologies" / "parking-lot.yaml")
    necks = {"n1", "n2", "n3"}
    assert [x for x in path(topo, "src", "dst") if x in necks] == ["n1", "n2", "n3"]
    assert [x for x in path(topo, "x1", "y2") if x in necks] == ["n1", "n2"]
    assert [x for x in path(topo, "x3", "y3") if x in necks] == ["n3"]


def topo(hosts: list[object], links: list[tuple[str, str]]) -> dict[str, object]:
    return {"name": "t", "hosts": hosts,
            "links": [{"name": f"l{i}", "between": list(b)} for i, b in enumerate(links)]}  # fmt: skip


def test_a_host_that_does_not_forward_is_not_a_way_through() -> None:
    spec = parse_topology(topo(["a", "m", "b"], [("a", "m"), ("m", "b")]), "t.yaml", Path("."))
    assert unreachable(spec) == [("a", "b")] and path(spec, "a", "b") == []
    routed = parse_topology(topo(["a", {"name": "m", "forward": True}, "b"],
                                 [("a", "m"), ("m", "b")]), "t.yaml", Path("."))  # fmt: skip
    assert unreachable(routed) == [] and path(routed, "a", "b") == ["l0", "l1"]
    assert routed.to_dict()["hosts"][1] == {"name": "m", "forward": True}


def test_hosts_not_all_connected_is_one_error() -> None:
    with pytest.raises(ConfigError, match=r"not all connected: a, b \| c, d") as e:
        parse_topology(topo(["a", "b", "c", "d"], [("a", "b"), ("c", "d")]), "t.yaml", Path("."))
    assert e.value.key == "links" and e.value.exit_code == 2
