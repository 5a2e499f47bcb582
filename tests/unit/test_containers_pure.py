"""Container host entries in a topology, and how an endpoint's command runs inside one (pure)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from testbed.config.topology import ContainerSpec, parse_topology, topology_from_dict
from testbed.errors import ConfigError
from testbed.net.containers.hosts import endpoint_argv
from testbed.net.containers.image import mirror


def topo(receiver: Any) -> dict[str, Any]:
    return {"name": "t", "hosts": ["sender", receiver],
            "links": [{"name": "path", "between": ["sender", "receiver"]}]}  # fmt: skip


def test_a_host_with_image_is_a_container_host_and_round_trips() -> None:
    spec = parse_topology(topo({"name": "receiver", "image": "rtc-testbed/endpoint:latest",
                                "command": "iperf3 -s", "env": {"A": 1}}), "t.yaml", Path("."))  # fmt: skip
    assert spec.hosts == ("sender", "receiver")
    c = spec.container("receiver")
    assert c == ContainerSpec("receiver", "rtc-testbed/endpoint:latest", ("iperf3", "-s"), None,
                              (("A", "1"),))  # fmt: skip
    assert spec.container("sender") is None
    again = topology_from_dict(spec.to_dict(), "t.yaml")
    assert again.containers == spec.containers and again.hosts == spec.hosts


def test_namespace_only_topologies_keep_their_dict() -> None:
    spec = parse_topology(topo("receiver"), "t.yaml", Path("."))
    assert spec.to_dict()["hosts"] == ["sender", "receiver"] and spec.containers == ()


@pytest.mark.parametrize(
    "receiver, key",
    [
        ({"name": "receiver", "command": ["x"]}, "hosts.receiver.command"),  # needs image:
        ({"name": "receiver", "forward": "yes"}, "hosts.receiver.forward"),
        ({"name": "receiver", "image": "bad image!"}, "hosts.receiver.image"),
        ({"name": "receiver", "image": "x", "ports": [1]}, "hosts[1].ports"),
        ({"name": "receiver", "image": "x", "command": []}, "hosts.receiver.command"),
        ({"name": "receiver", "image": "x", "endpoint": [1, 2]}, "hosts.receiver.endpoint"),
        ({"name": "receiver", "image": "x", "env": {"1A": "b"}}, "hosts.receiver.env.1A"),
        ({"name": "Receiver", "image": "x"}, "hosts[1].name"),
    ],
)
def test_bad_container_host_entries_name_the_key(receiver: Any, key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_topology(topo(receiver), "t.yaml", Path("."))
    assert e.value.key == key and e.value.exit_code == 2


def test_endpoint_command_inside_a_container() -> None:
    argv = [sys.executable, "-m", "testbed.rtc.aiortc.endpoint", "receiver", "--spec", "/o/s.json",
            "--out", "/o"]  # fmt: skip
    plain = ContainerSpec("receiver", "img")
    assert endpoint_argv(plain, argv, "receiver") == ["python3", *argv[1:]]
    own = ContainerSpec("receiver", "img", endpoint=("/usr/local/bin/mystack", "--verbose"))
    assert endpoint_argv(own, argv, "receiver") == [
        "/usr/local/bin/mystack", "--verbose", "receiver", "--spec", "/o/s.json", "--out", "/o"
    ]  # fmt: skip


def test_the_base_image_comes_from_apts_own_mirror() -> None:
    assert mirror().startswith("http")
