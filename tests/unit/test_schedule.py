"""Links that change: schedules (pure, time-injected, seeded), the field's trace formats (every
real OpenNetLab file), and their bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.config import load_topology, parse_link_spec
from testbed.config.schedule import ScheduleSpec, Segment
from testbed.config.traces import read_link_trace
from testbed.errors import ConfigError
from testbed.shaping.model import DELIVER, DROP_LOSS, DROP_QUEUE, LinkModel
from tests.conftest import ROOT

MS = 1_000_000
ONL = ROOT.parent / "shared" / "traces" / "opennetlab"
SHIPPED = ROOT / "topologies" / "traces" / "opennetlab"  # copies of three of them, in the repo


def spec(schedule: dict, **kw: object):  # type: ignore[no-untyped-def, type-arg]
    return parse_link_spec({**kw, "schedule": schedule}, "t.yaml", "links.l.uplink", Path("."))


def test_segments_inherit_and_the_schedule_loops_or_holds() -> None:
    s = spec({"segments": [{"duration_ms": 100, "rate_mbps": 5}, {"duration_ms": 50, "rate_mbps": 0},
                           {"duration_ms": 100, "delay_ms": 40}]}, rate_mbps=10, delay_ms=30).schedule  # fmt: skip
    assert s is not None
    rates = [seg.rate_mbps for seg in s.segments]
    assert rates == [5, 0, 0] and [seg.delay_ms for seg in s.segments] == [30, 30, 40]
    assert s.index_at(0) == 0 and s.index_at(120 * MS) == 1 and s.index_at(260 * MS) == 0
    assert s.boundary_after(10 * MS) == 100 * MS and s.boundary_after(260 * MS) == 350 * MS
    held = ScheduleSpec(s.segments, "hold")
    assert held.index_at(10_000 * MS) == 2 and held.boundary_after(200 * MS) == float("inf")


def test_rate_follows_the_schedule_across_a_boundary() -> None:
    """1250-byte packets (10 kbit): 1 ms each at 10 Mbps, 5 ms at 2 Mbps; one sent across the
    boundary takes its bits at both rates."""
    m = LinkModel(spec({"segments": [{"duration_ms": 100, "rate_mbps": 10},
                                     {"duration_ms": 100, "rate_mbps": 2}]}), seed=1)  # fmt: skip
    assert m.offer(0, 1250).link_exit_ns == 1 * MS
    assert m.offer(99_500_000, 1250).link_exit_ns == 100 * MS + 2_500_000  # 5 kbit at each
    assert m.offer(150 * MS, 1250).link_exit_ns == 155 * MS


def test_an_outage_holds_the_backlog_and_the_queue_drops() -> None:
    m = LinkModel(spec({"segments": [{"duration_ms": 100, "rate_mbps": 0},
                                     {"duration_ms": 100, "rate_mbps": 10}], "at_end": "hold"},
                       queue_packets=3), seed=1)  # fmt: skip
    verdicts = [m.offer(i * MS, 1250) for i in range(5)]
    assert [v.event for v in verdicts] == [DELIVER] * 3 + [DROP_QUEUE] * 2
    assert [v.link_exit_ns for v in verdicts[:3]] == [101 * MS, 102 * MS, 103 * MS]
    assert m.offer(150 * MS, 1250).link_exit_ns == 151 * MS  # the link recovered


def test_loss_and_delay_per_segment_deterministic_with_a_seed() -> None:
    sched = {"segments": [{"duration_ms": 1000, "loss_pct": 0, "delay_ms": 10},
                          {"duration_ms": 1000, "loss_pct": 50, "delay_ms": 50}]}  # fmt: skip
    runs = []
    for _ in range(2):
        m = LinkModel(spec(sched, rate_mbps=1000), seed=7)
        runs.append([m.offer(i * MS // 2, 100) for i in range(4000)])
    assert runs[0] == runs[1]
    first, second = runs[0][:2000], runs[0][2000:]
    assert all(v.event == DELIVER for v in first)
    assert 0.45 < sum(v.event == DROP_LOSS for v in second) / 2000 < 0.55
    assert first[5].release_ns - first[5].link_exit_ns == 10 * MS
    kept = [v for v in second if v.event == DELIVER]
    assert kept[-1].release_ns - kept[-1].link_exit_ns == 50 * MS


def test_gilbert_elliott_segment() -> None:
    m = LinkModel(spec({"segments": [{"duration_ms": 10_000, "gilbert_elliott": {"p_pct": 5, "r_pct": 20}}]},
                       rate_mbps=1000), seed=3)  # fmt: skip
    lost = [m.offer(i * 10_000, 100).event == DROP_LOSS for i in range(100_000)]
    assert 0.15 < sum(lost) / len(lost) < 0.25  # mean: p / (p + r) = 20%


@pytest.mark.skipif(not ONL.exists(), reason="../shared/traces is not beside the repo")
@pytest.mark.parametrize(
    "path", sorted(ONL.glob("*.json")) if ONL.exists() else [], ids=lambda p: p.name
)
def test_every_real_opennetlab_file(path: Path) -> None:
    unit = "fraction" if path.name.startswith("loss-") and "loss_0.json" not in path.name else None
    s = read_link_trace(path, loss_unit=unit)
    assert isinstance(s, ScheduleSpec) and s.segments and s.duration_s > 0
    assert all(seg.rate_mbps is not None and seg.rate_mbps >= 0 for seg in s.segments)
    if path.name.startswith("rtt-trace_rtt_200"):
        assert s.segments[0].delay_ms == 100  # rtt 200 ms: 100 ms each way
    if path.name.startswith("4G_500kbps"):
        mean = sum(x.rate_mbps * x.duration_ms for x in s.segments) / sum(
            x.duration_ms for x in s.segments
        )  # type: ignore[operator]
        assert 0.45 < mean < 0.55
    if unit == "fraction":
        assert max(seg.loss_pct for seg in s.segments) <= 100


def test_cooked_traces(tmp_path: Path) -> None:
    p = tmp_path / "fcc.log"
    p.write_text("0.0 2.5\n1.0 0.5\n2.0 4\n")
    s = read_link_trace(p)
    assert isinstance(s, ScheduleSpec)
    assert [(x.duration_ms, x.rate_mbps) for x in s.segments] == [
        (1000, 2.5),
        (1000, 0.5),
        (1000, 4),
    ]


def test_a_topology_link_can_follow_an_opennetlab_file(tmp_path: Path) -> None:
    topo = tmp_path / "t.yaml"
    topo.write_text(f"hosts: [a, b]\nlinks:\n  - name: l\n    between: [a, b]\n    uplink: {{trace: "
                    f"{SHIPPED / '4G_700kbps.json'}, loss_pct: 1, delay_ms: 20}}\n")  # fmt: skip
    t = load_topology(topo)
    up = t.links[0].uplink
    assert up.trace is None and up.schedule is not None
    first = up.schedule.segments[0]  # the file sets only capacity: loss and delay are the link's
    assert first.loss_pct == 1 and first.delay_ms == 20 and first.rate_mbps == 0.0024  # 2.4 kbps
    back = parse_link_spec(up.to_dict(), "job", "links.l.uplink", Path("/"))
    assert back == up  # read back from a cell's job: the same spec


@pytest.mark.parametrize(
    ("text", "suffix", "words"),
    [
        ("", ".log", "empty"),
        ("0.0 1\n0.0 2\n", ".log", "line 2: time 0 s comes after 0 s"),
        ("0 1\n1 -2\n", ".log", "line 2"),
        ("0 1 2\n", ".log", "expected `time_s Mbps`"),
        ('{"uplink": {"trace_pattern": [{"duration": -5, "capacity": 1}]}}', ".json", "trace_pattern[0].duration"),
        ('{"uplink": {"trace_pattern": [{"duration": 5, "capacity": -1}]}}', ".json", "trace_pattern[0].capacity"),
        ('{"uplink": {"trace_pattern": [{"duration": 5, "loss": 0.2}]}}', ".json", "trace_loss_unit"),
        ('{"uplink": {"trace_pattern": [{"duration": 5, "los": 1}]}}', ".json", "los: unknown key"),
        ('{"downlink": {"trace_pattern": [{"duration": 5}]}}', ".json", "no uplink pattern; the file has: downlink"),
        ("{not json", ".json", "not valid JSON"),
    ],
)  # fmt: skip
def test_bad_trace_files(tmp_path: Path, text: str, suffix: str, words: str) -> None:
    p = tmp_path / f"t{suffix}"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        parse_link_spec({"trace": str(p)}, "topo.yaml", "links.l.uplink", tmp_path)
    msg = str(e.value)
    assert words in msg and str(p) in msg and "\n" not in msg and e.value.exit_code == 2


@pytest.mark.parametrize(
    ("schedule", "key"),
    [
        ({"segments": []}, "schedule.segments"),
        ({"segments": [{"rate_mbps": 1}]}, "schedule.segments[0].duration_ms"),
        ({"segments": [{"duration_ms": -1}]}, "schedule.segments[0].duration_ms"),
        ({"segments": [{"duration_ms": 1, "loss_pct": 150}]}, "schedule.segments[0].loss_pct"),
        ({"segments": [{"duration_ms": 1}], "at_end": "bounce"}, "schedule.at_end"),
        ({"segments": [{"duration_ms": 1, "speed": 3}]}, "schedule.segments[0].speed"),
    ],
)
def test_bad_schedules(schedule: dict, key: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigError) as e:
        spec(schedule)
    assert e.value.key == f"links.l.uplink.{key}", e.value


def test_unscheduled_links_are_unchanged() -> None:
    """No schedule: the model's path (and its random streams) is the one measured before."""
    a = LinkModel(parse_link_spec({"rate_mbps": 10, "loss_pct": 5}, "t", "p", Path(".")), seed=5)
    events = [a.offer(i * MS, 1000).event for i in range(2000)]
    import random

    draws = random.Random(5)  # one Bernoulli draw per packet from Random(seed), as before
    assert events.count(DROP_LOSS) == sum(draws.random() < 0.05 for _ in range(2000))
    assert Segment(1, None, 0, 0, 0, None).rate_mbps is None
