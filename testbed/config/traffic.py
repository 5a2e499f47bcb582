"""Cross traffic: flows that share a bottleneck with the video, declared in the topology.

  cross_traffic:
    - {name: bulk, from: sender, to: receiver, kind: tcp, cc: cubic, start_s: 5}
    - {name: cbr, from: sender, to: receiver, kind: udp, rate_mbps: 3, on_ms: 500, off_ms: 500}

kind: udp (constant rate_mbps, or on/off: on_ms at rate_mbps then off_ms silent), tcp (a bulk
transfer with the congestion control cc: reno | cubic | bbr, what this kernel offers),
tcp_short (RFC 8868's short TCP flows: downloads of size_kb [30, 50] (uniform), idle between
them exponential with mean idle_mean_s (10); start_on: false starts with an idle period) or
malformed (rate_pps hostile datagrams at the media port of the stream's endpoint on `to`:
testbed.net.hostile; the endpoints must drop them, the cell counts them). start_s
and stop_s count from the start of the session's stream (stop_s: none = until it ends).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from testbed import validate
from testbed.errors import ConfigError

KINDS = ("udp", "tcp", "tcp_short", "malformed")
CONGESTION = ("reno", "cubic", "bbr")
FLOW_KEYS = (
    "name",
    "from",
    "to",
    "kind",
    "rate_mbps",
    "rate_pps",
    "on_ms",
    "off_ms",
    "cc",
    "start_s",
    "stop_s",
    "size_kb",
    "idle_mean_s",
    "start_on",
)


@dataclass(frozen=True)
class FlowSpec:
    name: str
    src: str
    dst: str
    kind: str = "udp"
    rate_mbps: float | None = None
    on_ms: float | None = None
    off_ms: float | None = None
    cc: str = "cubic"
    start_s: float = 0.0
    stop_s: float | None = None
    rate_pps: float | None = None  # malformed flows
    size_kb: tuple[float, float] | None = None  # tcp_short: each download's size, uniform
    idle_mean_s: float | None = None  # tcp_short: mean of the exponential idle time
    start_on: bool = True  # tcp_short: the first download at start_s (else after an idle time)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["from"], d["to"] = d.pop("src"), d.pop("dst")
        if self.kind != "tcp_short":
            for key in ("size_kb", "idle_mean_s", "start_on"):
                d.pop(key)
        else:
            d["size_kb"] = list(self.size_kb or ())
        return d


def parse_flows(raw: Any, hosts: tuple[str, ...], src: str) -> tuple[FlowSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise ConfigError(src, "cross_traffic", "expected a list of flows like "
                          "{name: bulk, from: sender, to: receiver, kind: tcp}")  # fmt: skip
    out = []
    for i, item in enumerate(raw):
        where = f"cross_traffic[{i}]"
        d = validate.strict_mapping(
            item, FLOW_KEYS, src, where, "{name: f, from: a, to: b, kind: udp}"
        )
        name = d.get("name", f"flow{i}")
        if not isinstance(name, str) or not name.isidentifier() or len(name) > 16:
            raise ConfigError(src, f"{where}.name", f"{name!r}: valid: a short identifier")
        for end in ("from", "to"):
            if d.get(end) not in hosts:
                raise ConfigError(
                    src, f"{where}.{end}", f"{d.get(end)!r}: valid: {', '.join(hosts)}"
                )
        if d["from"] == d["to"]:
            raise ConfigError(src, f"{where}.to", "a flow goes between two different hosts")
        kind = validate.choice(d.get("kind", "udp"), KINDS, src, f"{where}.kind")
        rate = None
        if kind == "udp":
            if d.get("rate_mbps") is None:
                raise ConfigError(src, f"{where}.rate_mbps", "missing; a UDP flow needs a rate")
            rate = validate.number(
                d["rate_mbps"], src, f"{where}.rate_mbps", 0, 10_000, lo_open=True
            )
        elif d.get("rate_mbps") is not None or d.get("on_ms") is not None:
            raise ConfigError(src, f"{where}.kind", f"a {kind} flow has no rate_mbps / on_ms "
                              "(a tcp flow takes what its congestion control gets; a malformed "
                              "flow sends rate_pps)")  # fmt: skip
        pps = None
        if kind == "malformed":
            pps = validate.number(d.get("rate_pps", 100), src, f"{where}.rate_pps", 0, 10_000,
                                  lo_open=True)  # fmt: skip
        elif d.get("rate_pps") is not None:
            raise ConfigError(src, f"{where}.rate_pps", "only a malformed flow has rate_pps")
        on = off = None
        if (d.get("on_ms") is None) != (d.get("off_ms") is None):
            raise ConfigError(
                src, f"{where}.on_ms", "give both on_ms and off_ms (an on/off flow), or neither"
            )
        if d.get("on_ms") is not None:
            on = validate.number(d["on_ms"], src, f"{where}.on_ms", 0, 3_600_000, lo_open=True)
            off = validate.number(d["off_ms"], src, f"{where}.off_ms", 0, 3_600_000, lo_open=True)
        start = validate.number(d.get("start_s", 0.0), src, f"{where}.start_s", 0, 86_400)
        stop = None
        if d.get("stop_s") is not None:
            stop = validate.number(d["stop_s"], src, f"{where}.stop_s", start, 86_400, lo_open=True)
        short = _short(d, kind, src, where)
        out.append(FlowSpec(name, str(d["from"]), str(d["to"]), kind, rate, on, off,
                            validate.choice(d.get("cc", "cubic"), CONGESTION, src, f"{where}.cc"),
                            start, stop, pps, *short))  # fmt: skip
    names = [f.name for f in out]
    if len(set(names)) != len(names):
        raise ConfigError(src, "cross_traffic", f"flow names repeat: {names}")
    return tuple(out)


def _short(d: dict[str, Any], kind: str, src: str,
           where: str) -> tuple[tuple[float, float] | None, float | None, bool]:  # fmt: skip
    """A tcp_short flow's (size_kb, idle_mean_s, start_on); other kinds have none of them."""
    if kind != "tcp_short":
        for key in ("size_kb", "idle_mean_s", "start_on"):
            if key in d:
                raise ConfigError(src, f"{where}.{key}", "only a tcp_short flow has it")
        return None, None, True
    size = d.get("size_kb", [30, 50])
    if not isinstance(size, list) or len(size) != 2:
        raise ConfigError(src, f"{where}.size_kb", f"{size!r}: valid: [smallest, largest] in KB")
    lo = validate.number(size[0], src, f"{where}.size_kb", 0, 1e7, lo_open=True)
    hi = validate.number(size[1], src, f"{where}.size_kb", lo, 1e7)
    idle = validate.number(d.get("idle_mean_s", 10.0), src, f"{where}.idle_mean_s", 0, 3600,
                           lo_open=True)  # fmt: skip
    start_on = d.get("start_on", True)
    if not isinstance(start_on, bool):
        raise ConfigError(src, f"{where}.start_on", f"{start_on!r} is not true or false")
    return (lo, hi), idle, start_on


def check_malformed_targets(
    flows: tuple[FlowSpec, ...], endpoints: tuple[str, str], src: str
) -> None:
    """A malformed flow aims at the stream's media port, so its `to` is the sender or receiver."""
    for flow in flows:
        if flow.kind == "malformed" and flow.dst not in endpoints:
            raise ConfigError(src, f"cross_traffic.{flow.name}.to",
                              f"{flow.dst!r}: a malformed flow aims at the stream's media port: "
                              f"valid: {', '.join(endpoints)}")  # fmt: skip
