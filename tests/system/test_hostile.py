"""Hostile datagrams during a real session (testbed.net.hostile, crafted with scapy): truncated
RTP, RTP and RTCP with lying lengths, lying STUN, DTLS-looking garbage and random bytes at both
endpoints' media ports. The session completes, the frame table is exact, and the cell counts
what reached each endpoint (from its own capture)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.config import load_topology
from testbed.errors import ConfigError
from testbed.net.hostile import KINDS
from testbed.rtc.chromium.browser import missing
from testbed.rtc.session import run_stream
from testbed.rtc.spec import parse_stream
from testbed.shaping.backends import make_backend
from tests.system.conftest import namespaces_of

TOPO = """name: hostile
hosts: [sender, receiver]
links:
  - name: path
    between: [sender, receiver]
    uplink: {rate_mbps: 10, delay_ms: 20}
    downlink: {rate_mbps: 10, delay_ms: 20}
cross_traffic:
  - {name: at_receiver, from: sender, to: receiver, kind: malformed, rate_pps: 300, start_s: 0.5}
  - {name: at_sender, from: receiver, to: sender, kind: malformed, rate_pps: 300, start_s: 0.5}
"""


@pytest.mark.parametrize("stack", ["aiortc", "chromium"])
def test_bursts_of_malformed_datagrams_do_not_stop_a_session(
    run: str, tmp_path: Path, stack: str
) -> None:
    if stack == "chromium" and missing():
        pytest.skip(str(missing()))
    topo_file = tmp_path / "t.yaml"
    topo_file.write_text(TOPO)
    spec = parse_stream({"bitrate_mbps": 1.0, "duration_s": 5.0, "stack": stack}, "test")
    out = tmp_path / "cell"
    res = run_stream(
        load_topology(topo_file), spec, out, make_backend("emu"), "test", run=run, seed=3
    )
    sent = res.frames[res.frames.status != "not_sent"]
    assert len(sent) >= 140 and (sent.status == "complete").all(), sent.status.value_counts()
    cell = json.loads((out / "cell.json").read_text())
    assert cell["media_ports"] is not None
    for flow, role in (("at_receiver", "receiver"), ("at_sender", "sender")):
        by_kind = cell["cross_traffic"][flow]["sent"]
        assert set(by_kind) == set(KINDS), by_kind
        total = sum(by_kind.values())
        assert total > 0.9 * 300 * 4.5, by_kind
        seen = cell["stray_datagrams"][role]["datagrams"]
        assert 0.95 * total <= seen <= total, (role, seen, total)  # a lossless link delivers them
    assert namespaces_of(run) == []


def test_a_malformed_flow_must_aim_at_an_endpoint(run: str, tmp_path: Path) -> None:
    topo_file = tmp_path / "t.yaml"
    extra = "  - {name: side, between: [receiver, other], uplink: {rate_mbps: 10}, downlink: {rate_mbps: 10}}\n"
    text = TOPO.replace("hosts: [sender, receiver]", "hosts: [sender, receiver, other]")
    text = text.replace("cross_traffic:", extra + "cross_traffic:").replace(
        "to: sender", "to: other"
    )
    topo_file.write_text(text)
    spec = parse_stream({"bitrate_mbps": 1.0, "duration_s": 1.0}, "test")
    with pytest.raises(
        ConfigError, match=r"cross_traffic.at_sender.to: 'other'.*valid: sender, receiver"
    ):
        run_stream(
            load_topology(topo_file), spec, tmp_path / "c", make_backend("emu"), "t", run=run
        )
    assert namespaces_of(run) == []
