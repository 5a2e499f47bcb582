"""The per-packet link log: one event per line, like Mahimahi's, readable by the analysis.

Line 1: '# rtc-testbed link log v2'; line 2: '# ' + JSON header (link, direction, spec, seed,
start_mono_ns, start_real_ns); line 3: column names; then one tab-separated line per packet:

  seq  arrival_ns  bytes  event  link_exit_ns  sched_ns  actual_ns  stamp

Times are ns since start_mono_ns (CLOCK_MONOTONIC, shared by every namespace). event is
deliver, drop_loss or drop_queue (drops have empty times), or write_error. sched_ns is when the
model said to release the packet, actual_ns when it was written out: their difference is the
emulator's lateness, so VM stalls are visible packet by packet. event drop_memory: the model
accepted the packet but the emulator had no room left to hold it (1 GiB of held packets);
held_at_stop: it was still held, not yet due, when the emulator stopped (sched_ns says when it
would have left; no actual_ns).
stamp says where arrival_ns came from: k, the kernel's stamp as the packet entered the TUN; o,
the emulator's own clock when it read the packet (that packet's kernel stamp was missed).
Version 1 logs (no stamp column) are read too.

Version 3 (links with a queue discipline, testbed.shaping.emu_queue) adds three columns:
sojourn_ns (how long the packet waited in the queue before the link took it; empty for drops),
flow (the hash of its 5-tuple that FQ-CoDel classifies on) and ecn ('' not ECN-capable, ect,
or ce: marked Congestion Experienced by this link). Its events add drop_aqm: dropped by the
discipline's own decision (CoDel's schedule, PIE's probability), where drop_queue is a full
queue (its limit; FQ-CoDel's drops from the fattest flow; drophead's drops of the oldest).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

from testbed.errors import TestbedError


class LinkLogError(TestbedError):
    """A file that should be a link log is not one (or not a whole one)."""


MAGIC = "# rtc-testbed link log v2"
MAGIC_QUEUE = "# rtc-testbed link log v3"
MAGICS = (MAGIC, MAGIC_QUEUE, "# rtc-testbed link log v1")
COLUMNS = ("seq", "arrival_ns", "bytes", "event", "link_exit_ns", "sched_ns", "actual_ns", "stamp")
QUEUE_COLUMNS = (*COLUMNS, "sojourn_ns", "flow", "ecn")
REQUIRED = COLUMNS[:-1]  # version 1 has no stamp column


def write_header(f: IO[str], header: dict[str, Any], queue: bool = False) -> None:
    """The first three lines; queue: the version 3 columns of a queue-discipline link."""
    f.write((MAGIC_QUEUE if queue else MAGIC) + "\n")
    f.write("# " + json.dumps(header, sort_keys=True) + "\n")
    f.write("\t".join(QUEUE_COLUMNS if queue else COLUMNS) + "\n")


def read_header(path: str | Path) -> dict[str, Any]:
    """The log's JSON header; a file that is not a link log is a LinkLogError naming it."""
    try:
        with open(path) as f:
            first = f.readline().rstrip("\n")
            if first not in MAGICS:
                why = "empty: its emulator wrote nothing (did it die?)" if not first else (
                    f"first line {first[:40]!r}")  # fmt: skip
                raise LinkLogError(f"{path}: not a link log ({why})")
            header = json.loads(f.readline()[2:])
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise LinkLogError(f"{path}: not a readable link log ({e})") from None
    if not isinstance(header, dict):
        raise LinkLogError(f"{path}: not a link log (its header is not a JSON object)")
    return header


def read_link_log(path: str | Path) -> Any:
    """The log as a pandas DataFrame (sorted by seq), with the header in .attrs['header']."""
    import pandas as pd

    header = read_header(path)
    try:
        df = pd.read_csv(path, sep="\t", skiprows=2, keep_default_na=False, na_values={
            c: [""] for c in ("link_exit_ns", "sched_ns", "actual_ns", "sojourn_ns")},
            dtype={"event": "category", "stamp": "category", "ecn": "category"})  # fmt: skip
        missing = [c for c in REQUIRED if c not in df]
        if missing:
            raise ValueError(f"no column {missing[0]!r}")
        for col in ("seq", "arrival_ns", "bytes"):
            df[col] = df[col].astype("int64")
        for col in ("link_exit_ns", "sched_ns", "actual_ns", "sojourn_ns"):
            if col in df:
                df[col] = df[col].astype("Int64")
    except (ValueError, TypeError, pd.errors.ParserError) as e:
        line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise LinkLogError(f"{path}: a malformed link log ({line})") from None
    df = df.sort_values("seq", kind="stable").reset_index(drop=True)
    df.attrs["header"] = header
    return df
