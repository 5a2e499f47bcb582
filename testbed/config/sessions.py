"""Several media sessions in one cell: `sessions:` in a topology (or set on it by an experiment).

  sessions:
    - {name: a, sender: s1, receiver: r1}
    - {name: b, sender: s2, receiver: r2, start_s: 20, stream: {stack: chromium, abr: gcc}}
    - {name: c, sender: s3, receiver: r3, pauses: [[40, 60]]}

Each session is a stream of its own: the cell's stream spec (the experiment's `stream:`, the
`testbed stream` options) with the session's `stream:` keys over it, its own sender and
receiver hosts (shared or not). start_s counts from the first session's connection (the first
session starts at 0); stop_s, when given, ends it early (its duration is stop_s - start_s);
otherwise it streams the cell's duration_s. pauses: [[from_s, to_s], ...] on the same clock
(after start_s, before stop_s) when the session sends no media. The stream keys are checked by the stream's own
parser (testbed.rtc.spec) before anything starts; here only what a topology can tell.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from testbed import validate
from testbed.errors import ConfigError

SESSION_KEYS = ("name", "sender", "receiver", "start_s", "stop_s", "pauses", "stream")
NOT_IN_STREAM = ("sender", "receiver", "duration_s", "pauses")  # the session's own keys say these


@dataclass(frozen=True)
class SessionDef:
    name: str
    sender: str
    receiver: str
    start_s: float = 0.0
    stop_s: float | None = None
    stream: tuple[tuple[str, Any], ...] = ()  # stream keys over the cell's (validated later)
    pauses: tuple[tuple[float, float], ...] = ()  # on the cell's clock, as start_s

    def stream_pauses(self) -> list[list[float]]:
        """The pauses as the session's stream counts them (from its own start)."""
        return [[a - self.start_s, b - self.start_s] for a, b in self.pauses]

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "sender": self.sender,
                               "receiver": self.receiver, "start_s": self.start_s}  # fmt: skip
        if self.stop_s is not None:
            out["stop_s"] = self.stop_s
        if self.pauses:
            out["pauses"] = [list(p) for p in self.pauses]
        if self.stream:
            out["stream"] = dict(self.stream)
        return out


def parse_sessions(raw: Any, hosts: Sequence[str], src: str) -> tuple[SessionDef, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise ConfigError(src, "sessions", "expected a non-empty list of sessions, e.g. "
                          "[{name: a, sender: s1, receiver: r1}]")  # fmt: skip
    out: list[SessionDef] = []
    for i, item in enumerate(raw):
        data = validate.mapping(item, src, f"sessions[{i}]")
        validate.check_keys(data, SESSION_KEYS, src, f"sessions[{i}]", label="valid keys")
        name = data.get("name")
        if not isinstance(name, str) or not name.isidentifier() or len(name) > 12:
            raise ConfigError(src, f"sessions[{i}].name", f"{name!r}: valid: a name of letters, "
                              "digits and _, at most 12 characters")  # fmt: skip
        where = f"sessions.{name}"
        if any(s.name == name for s in out):
            raise ConfigError(src, f"{where}.name", f"two sessions are named {name!r}")
        ends = []
        for role in ("sender", "receiver"):
            host = data.get(role)
            if host not in hosts:
                raise ConfigError(src, f"{where}.{role}", f"{host!r} is not a host; valid: "
                                  + ", ".join(hosts))  # fmt: skip
            ends.append(str(host))
        if ends[0] == ends[1]:
            raise ConfigError(src, f"{where}.receiver", "the receiver must be another host")
        start = validate.number(data.get("start_s", 0.0), src, f"{where}.start_s", 0, 86_400)
        stop = data.get("stop_s")
        if stop is not None:
            stop = validate.number(stop, src, f"{where}.stop_s", 0, 86_400)
            if stop <= start:
                raise ConfigError(src, f"{where}.stop_s", f"{stop:g} is not after start_s "
                                  f"{start:g}; valid: a time after the session starts")  # fmt: skip
        stream = validate.mapping(data.get("stream", {}), src, f"{where}.stream")
        for key in stream:
            if key in NOT_IN_STREAM:
                raise ConfigError(src, f"{where}.stream.{key}", "give it as the session's own "
                                  "sender / receiver / start_s / stop_s")  # fmt: skip
        if not out and start != 0:
            raise ConfigError(src, f"{where}.start_s", "the first session starts at 0 (later "
                              "ones count from its connection)")  # fmt: skip
        pauses = validate.pauses(data.get("pauses"), src, f"{where}.pauses", start, stop or 86_400)
        out.append(SessionDef(name, ends[0], ends[1], start, stop, _frozen(stream), pauses))
    return tuple(out)


def _frozen(stream: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted(stream.items()))
