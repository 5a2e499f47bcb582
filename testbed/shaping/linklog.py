"""The per-packet link log: one event per line, like Mahimahi's, readable by the analysis.

Line 1: '# rtc-testbed link log v1'; line 2: '# ' + JSON header (link, direction, spec, seed,
start_mono_ns, start_real_ns); line 3: column names; then one tab-separated line per packet:

  seq  arrival_ns  bytes  event  link_exit_ns  sched_ns  actual_ns

Times are ns since start_mono_ns (CLOCK_MONOTONIC, shared by every namespace). event is
deliver, drop_loss or drop_queue (drops have empty times), or write_error. sched_ns is when the
model said to release the packet, actual_ns when it was written out: their difference is the
emulator's lateness, so VM stalls are visible packet by packet.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import IO, Any

MAGIC = "# rtc-testbed link log v1"
COLUMNS = ("seq", "arrival_ns", "bytes", "event", "link_exit_ns", "sched_ns", "actual_ns")


def write_header(f: IO[str], header: dict[str, Any]) -> None:
    f.write(MAGIC + "\n")
    f.write("# " + json.dumps(header, sort_keys=True) + "\n")
    f.write("\t".join(COLUMNS) + "\n")


def read_header(path: str | Path) -> dict[str, Any]:
    with open(path) as f:
        first = f.readline().rstrip("\n")
        if first != MAGIC:
            raise ValueError(f"{path}: not a link log (first line {first!r})")
        header: dict[str, Any] = json.loads(f.readline()[2:])
        return header


def read_link_log(path: str | Path) -> Any:
    """The log as a pandas DataFrame (sorted by seq), with the header in .attrs['header']."""
    import pandas as pd

    header = read_header(path)
    df = pd.read_csv(path, sep="\t", skiprows=2, dtype={"event": "category"})
    for col in ("link_exit_ns", "sched_ns", "actual_ns"):
        df[col] = df[col].astype("Int64")
    df = df.sort_values("seq", kind="stable").reset_index(drop=True)
    df.attrs["header"] = header
    return df
