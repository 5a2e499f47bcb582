"""FecSpec: which code, how much redundancy, and how a frame's packets are split into blocks.

A frame of k media packets is cut into blocks; each block of k_b packets gets m_b repair
packets, and the receiver rebuilds the block from any k_b of its k_b + m_b packets.
- xor: blocks of `group_packets` media packets with one parity packet each (ULPFEC's basic mode).
- rs: Reed-Solomon (zfec), m_b = ceil(overhead x k_b); blocks are cut so k_b + m_b <= 255.
Policies: `fixed` (overhead as given) or `table` (rs only): the overhead is looked up by the
loss rate the sender heard of (over the last `loss_window_s` of receiver reports; 0: the last
report's fraction) and the frame's packet count, like libwebrtc's
kFecRateTable; our table is computed: the smallest m whose block-failure probability at that
loss is <= `residual` (see rs_table).
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from typing import Any

from testbed import validate
from testbed.errors import ConfigError
from testbed.validate import strict_mapping

SCHEMES = ("none", "xor", "rs", "ulpfec", "flexfec")  # the last two: libwebrtc's own
NATIVE = ("ulpfec", "flexfec")
POLICIES = ("fixed", "table")
MAX_BLOCK = 255  # zfec: n <= 256; one byte in our repair header
LOSS_BUCKETS_PCT = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 50.0)
KEYS = ("scheme", "overhead", "group_packets", "policy", "residual", "nack_wait_ms",
        "loss_window_s")  # fmt: skip


@dataclass(frozen=True)
class FecSpec:
    scheme: str = "none"
    overhead: float = 0.2
    group_packets: int = 5
    policy: str = "fixed"
    residual: float = 0.01
    nack_wait_ms: float = 25.0  # longest a NACK waits for FEC to recover its packet
    loss_window_s: float = 3.0  # table: the loss rate over this much of the receiver reports

    @property
    def enabled(self) -> bool:
        return self.scheme != "none"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def label(self) -> str:
        if self.scheme == "none":
            return "none"
        if self.scheme in NATIVE:
            return self.scheme
        if self.scheme == "xor":
            return f"xor/{self.group_packets}"
        if self.policy == "table":
            return f"rs table {self.residual:.2g}"  # the residual it aims for
        return f"rs {self.overhead:.0%}"


def parse_fec(value: Any, src: str, key: str = "stream.fec") -> FecSpec:
    """A mapping ({scheme: rs, overhead: 0.2}), a scheme name, or None (no FEC)."""
    if value is None:
        return FecSpec()
    if isinstance(value, str):
        value = {"scheme": value}
    value = strict_mapping(value, KEYS, src, key, "{scheme: rs, overhead: 0.2}")
    scheme = value.get("scheme", "rs")
    if scheme not in SCHEMES:
        raise ConfigError(
            src, f"{key}.scheme", f"{scheme!r} is unknown; valid: {', '.join(SCHEMES)}"
        )
    defaults = FecSpec().to_dict()
    tuned = sorted(k for k, v in value.items() if k != "scheme" and v != defaults[k])
    if scheme in NATIVE and tuned:  # (a resolved spec carries the defaults: those are fine)
        raise ConfigError(src, f"{key}.{tuned[0]}", f"{scheme} is "
                          "libwebrtc's: it sets its own protection from the loss it hears; give "
                          "only the scheme")  # fmt: skip
    policy = value.get("policy", "fixed")
    if policy not in POLICIES:
        raise ConfigError(
            src, f"{key}.policy", f"{policy!r} is unknown; valid: {', '.join(POLICIES)}"
        )
    if policy == "table" and scheme != "rs":
        raise ConfigError(src, f"{key}.policy", "table needs scheme: rs")
    for name, lo, hi in (
        ("overhead", 0.0, 4.0),
        ("residual", 1e-9, 0.5),
        ("nack_wait_ms", 0.0, 1000.0),
        ("loss_window_s", 0.0, 60.0),
    ):
        if value.get(name) is not None:
            validate.number(value[name], src, f"{key}.{name}", lo, hi, style="words")
    if value.get("group_packets") is not None:
        validate.integer(value["group_packets"], src, f"{key}.group_packets", 1, 254)
    d = FecSpec()
    return FecSpec(
        scheme=scheme, policy=policy, overhead=float(value.get("overhead", d.overhead)),
        group_packets=int(value.get("group_packets", d.group_packets)),
        residual=float(value.get("residual", d.residual)),
        nack_wait_ms=float(value.get("nack_wait_ms", d.nack_wait_ms)),
        loss_window_s=float(value.get("loss_window_s", d.loss_window_s)),
    )  # fmt: skip


def _binom_tail(n: int, p: float, more_than: int) -> float:
    """P(X > more_than) for X ~ Binomial(n, p)."""
    below = sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(more_than + 1))
    return max(0.0, 1.0 - below)


@functools.lru_cache(maxsize=4096)
def rs_table(loss_bucket_pct: float, k: int, residual: float) -> int:
    """Repair packets for a block of k media packets: the least m with P(> m of k+m lost) <= residual."""
    p = loss_bucket_pct / 100
    if p <= 0:
        return 0
    for m in range(0, MAX_BLOCK - k + 1):
        if _binom_tail(k + m, p, m) <= residual:
            return m
    return MAX_BLOCK - k


def loss_bucket(loss_pct: float) -> float:
    """The table row: the smallest bucket at or above the loss (pessimistic)."""
    for b in LOSS_BUCKETS_PCT:
        if loss_pct <= b:
            return b
    return LOSS_BUCKETS_PCT[-1]


def _split(k: int, max_k: int) -> list[tuple[int, int]]:
    """k packets into nearly equal consecutive blocks of at most max_k: (start, count)."""
    n = math.ceil(k / max_k)
    base, extra = divmod(k, n)
    out, start = [], 0
    for i in range(n):
        count = base + (1 if i < extra else 0)
        out.append((start, count))
        start += count
    return out


def plan_blocks(k: int, spec: FecSpec, loss_pct: float = 0.0) -> list[tuple[int, int, int]]:
    """How to protect a frame of k media packets: [(first index, k_b, m_b)], m_b >= 1."""
    if k <= 0 or spec.scheme == "none":
        return []
    if spec.scheme == "xor":
        return [(s, c, 1) for s, c in _split(k, spec.group_packets)]
    if spec.policy == "table":
        # cut so every block fits, then ask the table per block
        blocks = _split(k, MAX_BLOCK // 2)
        row = loss_bucket(loss_pct)
        out = []
        for s, c in blocks:
            m = min(rs_table(row, c, spec.residual), MAX_BLOCK - c)
            if m > 0:
                out.append((s, c, m))
        return out
    if spec.overhead <= 0:
        return []
    max_k = max(1, math.floor(MAX_BLOCK / (1 + spec.overhead)))
    out = []
    for s, c in _split(k, max_k):
        m = min(max(1, math.ceil(spec.overhead * c - 1e-9)), MAX_BLOCK - c)
        out.append((s, c, m))
    return out
