"""Replay a link log's arrivals through the pure model: did the emulator do what the model says?

The log records each packet's arrival (as the emulator stamped it) and size; the model is pure
and seeded, so feeding it the same arrivals must give the same fate to every packet (deliver or
which drop) and the same scheduled release. A difference means the emulator's loop and the
reference disagree: the offline check of an ideal droptail link on the very same arrivals.
A link with a queue discipline (log v3: its flow and ECN columns) is replayed through the
QueueLinkModel, packet by packet the same way, the CE marks compared too.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.config import parse_link_spec
from testbed.config.traces import load_trace
from testbed.shaping.linklog import read_link_log
from testbed.shaping.model import LinkModel
from testbed.shaping.queue_link import QueueLinkModel

# What the model's verdict became in the emulator: a delivered packet may still fail to be written.
AS_MODEL = {"deliver": "deliver", "write_error": "deliver", "drop_memory": "deliver",
            "held_at_stop": "deliver", "drop_loss": "drop_loss", "drop_queue": "drop_queue",
            "drop_aqm": "drop_aqm"}  # fmt: skip


@dataclass(frozen=True)
class Replay:
    packets: int
    events: dict[str, int]  # the log's events, counted
    event_mismatches: int
    release_mismatches: int
    first_mismatch: int | None  # seq of the first packet the two disagree on


def replay_link_log(path: str | Path) -> Replay:
    """Feed the log's arrivals to a fresh LinkModel built from its header; compare each packet."""
    df = read_link_log(path)
    header = df.attrs["header"]
    spec = parse_link_spec(header["spec"], str(path), "header.spec", Path("/"))
    trace = load_trace(spec.trace) if spec.trace else None
    start = int(header["start_mono_ns"])
    if not spec.queue.is_default:
        return _replay_queue(df, QueueLinkModel(spec, int(header["seed"]), start, trace), start)
    model = LinkModel(spec, seed=int(header["seed"]), start_ns=start, trace=trace)
    events = df["event"].astype(str).tolist()
    sched = df["sched_ns"].tolist()
    bad_event = bad_release = 0
    first: int | None = None
    for seq, arrival, size, event, sched_ns in zip(
        df["seq"].tolist(), df["arrival_ns"].tolist(), df["bytes"].tolist(), events, sched,
        strict=True,
    ):  # fmt: skip
        v = model.offer(start + int(arrival), int(size))
        if v.event != AS_MODEL.get(event, event):
            bad_event += 1
        elif v.event == "deliver" and v.release_ns - start != int(sched_ns):
            bad_release += 1
        else:
            continue
        first = seq if first is None else first
    return Replay(len(df), dict(Counter(events)), bad_event, bad_release, first)


def _replay_queue(df: Any, model: QueueLinkModel, start: int) -> Replay:
    """Offer each arrival (with its flow and ECN capability) and compare every fate (but of
    packets still held at the stop: the model decides theirs later)."""
    import pandas as pd

    events = df["event"].astype(str).tolist()
    ecn = df["ecn"].astype(str).tolist()
    expect = {int(seq): (AS_MODEL.get(e, e), None if pd.isna(s) else int(s), c == "ce")
              for seq, e, s, c in zip(df["seq"], events, df["sched_ns"], ecn, strict=True)
              if e != "held_at_stop"}  # fmt: skip
    got: dict[int, tuple[str, int | None, bool]] = {}
    rows = zip(df["seq"], df["arrival_ns"], df["bytes"], df["flow"], ecn, strict=True)
    for seq, arrival, size, flow, word in rows:
        for o in model.offer(start + int(arrival), int(seq), int(size), int(flow), word != ""):
            got[o.seq] = (o.event, o.release_ns - start if o.event == "deliver" else None, o.ce)
    for o in model.advance(1 << 62):
        got[o.seq] = (o.event, o.release_ns - start if o.event == "deliver" else None, o.ce)
    bad_event = bad_release = 0
    first: int | None = None
    for seq, (event, sched, ce) in sorted(expect.items()):
        g_event, g_sched, g_ce = got.get(seq, ("missing", None, False))
        if g_event != event or g_ce != ce:
            bad_event += 1
        elif event == "deliver" and sched is not None and g_sched != sched:
            bad_release += 1  # (held at stop with no schedule yet: its fate came after)
        else:
            continue
        first = seq if first is None else first
    return Replay(len(df), dict(Counter(events)), bad_event, bad_release, first)
