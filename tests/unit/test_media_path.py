"""Sessions may use either direction of any link: the cell says which, and analysis reads it."""

from __future__ import annotations

import json
from pathlib import Path

from testbed.analysis.load import media_link
from testbed.config import load_topology
from testbed.rtc.mediapath import media_path
from testbed.rtc.spec import parse_stream
from testbed.rtc.timeseries import media_log
from tests.conftest import ROOT


def test_the_media_direction_follows_the_sender() -> None:
    topo = load_topology(ROOT / "topologies" / "p2p.yaml")
    forward = parse_stream({})
    backward = parse_stream({"sender": "receiver", "receiver": "sender"})
    assert media_path(topo, forward) == {"link": "path", "direction": "uplink"}
    assert media_path(topo, backward) == {"link": "path", "direction": "downlink"}


def test_analysis_reads_the_recorded_direction(tmp_path: Path) -> None:
    up, down = (
        {"rate_mbps": 10, "delay_ms": 30, "loss_pct": 0},
        {"rate_mbps": 5, "delay_ms": 7, "loss_pct": 2},
    )
    cell = {"topology": {"links": {"a": {"uplink": up, "downlink": down}}},
            "path": {"link": "a", "direction": "downlink"}}  # fmt: skip
    assert media_link(cell) == {"media": down, "feedback": up}
    del cell["path"]  # cells from before it was recorded: the first link's uplink
    assert media_link(cell) == {"media": up, "feedback": down}
    (tmp_path / "cell.json").write_text(
        json.dumps({"path": {"link": "a", "direction": "downlink"}})
    )
    assert media_log(tmp_path) == tmp_path / "link-a-downlink.log"
