"""A link direction's queue discipline (`queue:`): droptail, drophead, CoDel, PIE, FQ-CoDel.

Written as a name (`queue: codel`) or a mapping (`queue: {discipline: codel, target_ms: 5}`);
a parameter left out takes its RFC's default (the kernel's where the RFC leaves it open).
The packet limits (queue_packets, queue_bytes, queue_ms) are the link's, for every discipline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from testbed import validate
from testbed.errors import ConfigError

# discipline -> {parameter: default}. RFC 8289 (CoDel), RFC 8033 (PIE), RFC 8290 (FQ-CoDel).
DEFAULTS: dict[str, dict[str, float]] = {
    "droptail": {},
    "drophead": {},
    "codel": {"target_ms": 5.0, "interval_ms": 100.0},
    "pie": {"target_ms": 15.0, "tupdate_ms": 15.0, "alpha": 0.125, "beta": 1.25,
            "max_burst_ms": 150.0},
    "fq_codel": {"target_ms": 5.0, "interval_ms": 100.0, "quantum_bytes": 1514, "flows": 1024},
}  # fmt: skip
DISCIPLINES = tuple(DEFAULTS)
AQM = ("codel", "pie", "fq_codel")  # the disciplines that can mark ECN instead of dropping
_INTEGERS = ("quantum_bytes", "flows")
_UPPER = {"target_ms": 10_000.0, "interval_ms": 60_000.0, "tupdate_ms": 10_000.0,
          "alpha": 100.0, "beta": 100.0, "max_burst_ms": 60_000.0}  # fmt: skip


@dataclass(frozen=True)
class QueueSpec:
    """The discipline and its parameters, every one resolved (defaults filled in)."""

    discipline: str = "droptail"
    params: tuple[tuple[str, float], ...] = ()

    def get(self, name: str) -> float:
        return dict(self.params)[name]

    @property
    def is_default(self) -> bool:
        return self.discipline == "droptail"

    def to_dict(self) -> dict[str, Any]:
        return {"discipline": self.discipline, **dict(self.params)}


DROPTAIL = QueueSpec()


def parse_queue(value: Any, src: str, key: str) -> QueueSpec:
    """`queue:` as a name or a mapping; every error names the key and what is valid."""
    if isinstance(value, str):
        value = {"discipline": value}
    data = validate.mapping(value, src, key, example="{discipline: codel, target_ms: 5}")
    name = validate.choice(data.get("discipline", "droptail"), DISCIPLINES, src,
                           f"{key}.discipline", "queue discipline")  # fmt: skip
    defaults = DEFAULTS[name]
    for k in data:
        if k != "discipline" and k not in defaults:
            valid = ", ".join(["discipline", *defaults])
            raise ConfigError(src, f"{key}.{k}", f"not a parameter of {name}; valid: {valid}")
    params: list[tuple[str, float]] = []
    for p, default in defaults.items():
        where = f"{key}.{p}"
        if p not in data:
            params.append((p, default))
        elif p in _INTEGERS:
            params.append(
                (p, validate.integer(data[p], src, where, 64 if p == "quantum_bytes" else 1, 65536))
            )
        else:
            params.append((p, validate.number(data[p], src, where, 0, _UPPER[p], lo_open=True)))
    return QueueSpec(name, tuple(params))
