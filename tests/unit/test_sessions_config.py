"""`sessions:` of a topology (pure): what is valid, what is one clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.config import load_topology
from testbed.errors import ConfigError
from testbed.rtc.spec import parse_stream, session_streams
from tests.conftest import ROOT

DUMBBELL = ROOT / "topologies" / "dumbbell.yaml"


def sessions(text: str) -> list[str]:
    return [f"sessions={text}"]


def test_sessions_take_the_cells_stream_with_their_own_keys_over_it() -> None:
    topo = load_topology(DUMBBELL, sessions(
        "[{name: a, sender: s1, receiver: r1}, {name: b, sender: s2, receiver: r2, start_s: 20,"
        " stop_s: 50, stream: {bitrate_mbps: 0.5, stack: chromium}}]"))  # fmt: skip
    base = parse_stream({"bitrate_mbps": 2, "duration_s": 60}, "test")
    (a, _, sa), (b, start_b, sb) = session_streams(topo, base)
    assert (a, sa.sender, sa.receiver, sa.bitrate_mbps, sa.duration_s) == ("a", "s1", "r1", 2, 60)
    assert (b, start_b, sb.bitrate_mbps, sb.stack, sb.duration_s) == ("b", 20, 0.5, "chromium", 30)
    assert topo.to_dict()["sessions"][1]["stop_s"] == 50
    assert "sessions" not in load_topology(DUMBBELL).to_dict()  # the digest of a plain topology


@pytest.mark.parametrize(
    ("text", "key", "says"),
    [
        ("[{name: a, sender: s1, receiver: r1}, {name: a, sender: s2, receiver: r2}]",
         "sessions.a.name", "two sessions are named 'a'"),
        ("[{name: a, sender: s1, receiver: nobody}]", "sessions.a.receiver", "valid: s1, s2"),
        ("[{name: a, sender: s1, receiver: r1}, {name: b, sender: s2, receiver: r2, start_s: 9,"
         " stop_s: 5}]", "sessions.b.stop_s", "is not after start_s"),
        ("[{name: a, sender: s1, receiver: r1, start_s: 2}]", "sessions.a.start_s", "starts at 0"),
        ("[{name: a, sender: s1, receiver: r1, stream: {sender: s2}}]", "sessions.a.stream.sender",
         "the session's own"),
        ("[{name: a, sender: s1, receiver: s1}]", "sessions.a.receiver", "another host"),
        ("[{name: a, sender: s1, receiver: r1, colour: red}]", "sessions[0].colour", "unknown key"),
        ("[]", "sessions", "non-empty list"),
    ],
)  # fmt: skip
def test_bad_sessions_are_one_error_naming_the_key(text: str, key: str, says: str) -> None:
    with pytest.raises(ConfigError) as e:
        load_topology(DUMBBELL, sessions(text))
    assert e.value.key == key and says in e.value.message and e.value.exit_code == 2


def test_a_bad_stream_key_of_a_session_names_the_session() -> None:
    topo = load_topology(DUMBBELL, sessions(
        "[{name: a, sender: s1, receiver: r1, stream: {bitrate_mbps: -1}}]"))  # fmt: skip
    with pytest.raises(ConfigError) as e:
        session_streams(topo, parse_stream({}, "test"))
    assert e.value.key == "sessions.a.stream.bitrate_mbps"


def test_an_experiment_over_sessions_loads(tmp_path: Path) -> None:
    from testbed.experiment.spec import load_experiment

    exp = tmp_path / "e.yaml"
    exp.write_text(f"name: two\ntopology: {DUMBBELL}\n"
                   "set: {sessions: [{name: a, sender: s1, receiver: r1},"
                   " {name: b, sender: s3, receiver: r3, start_s: 10}]}\n"
                   "stream: {duration_s: 30}\ngrid: {stream.bitrate_mbps: [1, 2]}\n")  # fmt: skip
    cells = load_experiment(exp).cells
    assert len(cells) == 2 and [s.name for s in cells[0].topology.sessions] == ["a", "b"]


def test_a_session_without_a_route_is_refused_before_anything_starts() -> None:
    from testbed.config import parse_topology

    raw = {"name": "t", "hosts": ["a", "m", "b"],
           "links": [{"name": "l0", "between": ["a", "m"]}, {"name": "l1", "between": ["m", "b"]}],
           "sessions": [{"name": "x", "sender": "a", "receiver": "b"}]}  # fmt: skip
    topo = parse_topology(raw, "t.yaml", Path("."))
    with pytest.raises(ConfigError) as e:
        session_streams(topo, parse_stream({}, "test"))
    assert e.value.key == "sessions.x" and "no route from a to b" in e.value.message
