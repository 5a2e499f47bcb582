"""Strict readers for configuration values, shared by every spec (topology, stream, fec, roi).

Each raises ConfigError naming the source, the key and what would be valid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from testbed.errors import ConfigError


def _fmt(x: float) -> str:
    return f"{x:g}"


def number(
    value: Any,
    src: str,
    key: str,
    lo: float,
    hi: float,
    *,
    lo_open: bool = False,
    style: str = "interval",
) -> float:
    """A finite int or float in [lo, hi] ((lo, hi] with lo_open). Booleans are not numbers.

    style: how the valid range is written in the error: interval `[0, 100]` or words `0 to 4`.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        name = key.rsplit(".", 1)[-1]
        raise ConfigError(src, key, f"{value!r} is not a number; give {name} as a plain number")
    low_ok = value > lo if lo_open else value >= lo
    if not low_ok or value > hi or math.isnan(value):
        if style == "words":
            valid = f"{'> ' if lo_open else ''}{_fmt(lo)} to {_fmt(hi)}"
        else:
            valid = f"{'(' if lo_open else '['}{_fmt(lo)}, {_fmt(hi)}]"
        raise ConfigError(src, key, f"{value} is out of range; valid: {valid}")
    return float(value)


def integer(value: Any, src: str, key: str, lo: int, hi: int | None = None) -> int:
    """A whole number >= lo (and <= hi)."""
    valid = f"a whole number >= {lo}" if hi is None else f"a whole number {lo} to {hi}"
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(src, key, f"{value!r} is not a whole number; valid: {valid}")
    if value < lo or (hi is not None and value > hi):
        raise ConfigError(src, key, f"{value} is out of range; valid: {valid}")
    return value


def choice(value: Any, valid: Sequence[str], src: str, key: str, what: str = "") -> str:
    if value not in valid:
        extra = f" {what}" if what else ""
        raise ConfigError(src, key, f"{value!r} is unknown{extra}; valid: {', '.join(valid)}")
    return str(value)


def mapping(value: Any, src: str, key: str, example: str = "") -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        like = f" like {example}" if example else " of keys"
        raise ConfigError(src, key, f"{value!r}: expected a mapping{like}")
    return value


def check_keys(
    data: Mapping[str, Any], allowed: Iterable[str], src: str, path: str, label: str = "valid"
) -> None:
    allowed = list(allowed)
    for k in data:
        if k not in allowed:
            where = f"{path}.{k}" if path else str(k)
            raise ConfigError(src, where, f"unknown key; {label}: {', '.join(allowed)}")


def strict_mapping(
    value: object, allowed: tuple[str, ...], src: str, key: str, example: str
) -> dict[str, object]:
    """A nested config mapping (stream.fec, stream.roi): a mapping, with only known keys."""
    data = mapping(value, src, key, example)
    check_keys(data, allowed, src, key)
    return dict(data)


def pauses(value: Any, src: str, key: str, lo: float,
           hi: float) -> tuple[tuple[float, float], ...]:  # fmt: skip
    """[[from_s, to_s], ...] within (lo, hi], in order, not overlapping (a stream's pauses, on
    its own clock or on a cell's)."""
    if value is None:
        return ()
    example = "valid: a list of [from_s, to_s] pairs, e.g. [[10, 15]]"
    if not isinstance(value, list | tuple):
        raise ConfigError(src, key, f"{value!r}: {example}")
    out: list[tuple[float, float]] = []
    for i, pair in enumerate(value):
        if not isinstance(pair, list | tuple) or len(pair) != 2:
            raise ConfigError(src, f"{key}[{i}]", f"{pair!r}: {example}")
        a = number(pair[0], src, f"{key}[{i}]", lo, hi, lo_open=True)
        b = number(pair[1], src, f"{key}[{i}]", lo, hi, lo_open=True)
        if b <= a or (out and a < out[-1][1]):
            raise ConfigError(src, f"{key}[{i}]", f"{list(pair)!r}: a pause ends after it "
                              "begins, and after the one before it ends")  # fmt: skip
        out.append((float(a), float(b)))
    return tuple(out)
