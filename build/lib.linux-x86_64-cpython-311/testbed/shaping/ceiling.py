"""The highest link rate this machine emulated precisely: measured by `bench link --load`, kept
here, said by `doctor` and by `up` for a link faster than it (never silently degraded)."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path
from typing import Any

from testbed.config import TopologySpec
from testbed.files import write_atomic

PRECISE_P99_MS = 0.5  # the precision `bench link --load` asks of a rate


def saved_path() -> Path:
    """Where the last --load result is kept (this machine's own measurement)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "rtc-testbed" / "bench-load.json"


def save_result(out: dict[str, Any], json_out: Path | None) -> None:
    out = {**out, "host": platform.node(), "kernel": platform.release(), "time": time.time()}
    text = json.dumps(out, indent=1) + "\n"
    for path in (saved_path(), json_out):
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(path, text)


def _saved() -> dict[str, Any] | None:
    try:
        saved = json.loads(saved_path().read_text())
        return saved if isinstance(saved.get("max_rate_mbps"), dict) else None
    except (OSError, ValueError, AttributeError):
        return None


def ceiling_words() -> str:
    """What doctor says: the highest rate this machine emulated with the asked precision."""
    saved = _saved()
    if saved is None:
        return "precise ceiling not measured here yet: `testbed bench link --load` measures it"
    when = time.strftime("%Y-%m-%d", time.gmtime(saved.get("time", 0)))
    rates = ", ".join(f"{loop} loop {mbps:g} Mbps" for loop, mbps in saved["max_rate_mbps"].items())
    host = "this host" if saved.get("host") == platform.node() else f"host {saved.get('host')}"
    return (f"highest rate with p99 delay error <= {PRECISE_P99_MS} ms: {rates} "
            f"(measured {when} on {host}; links faster than that are emulated less precisely)")  # fmt: skip


def links_over_ceiling(topology: TopologySpec) -> list[str]:
    """One line per link direction faster than the compiled loop's measured precise ceiling."""
    saved = _saved()
    best = saved["max_rate_mbps"].get("compiled") if saved else None
    if not best:
        return []
    out = []
    for link in topology.links:
        for direction, spec in (("uplink", link.uplink), ("downlink", link.downlink)):
            if spec.rate_mbps is not None and spec.rate_mbps > best:
                out.append(f"link {link.name} {direction}: {spec.rate_mbps:g} Mbps is above the "
                           f"{best:g} Mbps this machine emulated with p99 delay error <= "
                           f"{PRECISE_P99_MS} ms (`testbed bench link --load`); expect larger errors")  # fmt: skip
    return out
