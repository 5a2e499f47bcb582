"""Controllers by name: the built-ins, the `rtc_testbed.abr` entry point group, or a dotted
path `package.module:Class`. Resolved (and constructed once) while the config is validated,
so a typo is a one-line error before anything is set up."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from testbed.abr.base import Controller
from testbed.abr.builtin import (
    AccuracyCapController,
    BudgetController,
    CapController,
    FixedController,
    MarginController,
    RembController,
    StepsController,
)
from testbed.abr.curve import CurveError
from testbed.errors import ConfigError
from testbed.plugins import resolve_named

BUILTIN: dict[str, type[Any]] = {
    "fixed": FixedController,
    "remb": RembController,
    "budget": BudgetController,
    "cap": CapController,
    "margin": MarginController,
    "accuracy_cap": AccuracyCapController,
    "steps": StepsController,
}
GROUP = "rtc_testbed.abr"


def known() -> list[str]:
    return sorted({*BUILTIN, *(ep.name for ep in entry_points(group=GROUP))})


def resolve(name: str, src: str, key: str = "stream.abr") -> type[Any]:
    cls: type[Any] = resolve_named(name, BUILTIN, GROUP, "update", "update(feedback)", src, key)
    return cls


def make(
    name: str, params: Mapping[str, Any], initial_bps: float, fps: float, src: str = "stream"
) -> Controller:
    """Construct a controller; bad params are a ConfigError naming stream.abr_params."""
    cls = resolve(name, src)
    try:
        inspect.signature(cls).bind(initial_bps=initial_bps, fps=fps, **params)
    except TypeError as e:
        raise ConfigError(src, "stream.abr_params", f"{e} (for {name})") from None
    try:
        controller: Controller = cls(initial_bps=initial_bps, fps=fps, **params)
    except CurveError as e:
        raise ConfigError(src, "stream.abr_params.curve", str(e)) from None
    except (TypeError, ValueError) as e:
        raise ConfigError(src, "stream.abr_params", f"{e} (for {name})") from None
    return controller
