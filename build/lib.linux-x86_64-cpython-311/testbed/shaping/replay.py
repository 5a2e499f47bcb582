"""Replay a link log's arrivals through the pure model: did the emulator do what the model says?

The log records each packet's arrival (as the emulator stamped it) and size; the model is pure
and seeded, so feeding it the same arrivals must give the same fate to every packet (deliver or
which drop) and the same scheduled release. A difference means the emulator's loop and the
reference disagree: the offline check of an ideal droptail link on the very same arrivals.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from testbed.config import parse_link_spec
from testbed.config.traces import load_trace
from testbed.shaping.linklog import read_link_log
from testbed.shaping.model import LinkModel

# What the model's verdict became in the emulator: a delivered packet may still fail to be written.
AS_MODEL = {"deliver": "deliver", "write_error": "deliver", "drop_memory": "deliver",
            "held_at_stop": "deliver", "drop_loss": "drop_loss", "drop_queue": "drop_queue"}  # fmt: skip


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
    counts: dict[str, int] = {}
    for e in events:
        counts[e] = counts.get(e, 0) + 1
    return Replay(len(df), counts, bad_event, bad_release, first)
