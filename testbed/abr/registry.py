"""Controllers by name: the built-ins, the `rtc_testbed.abr` entry point group, or a dotted
path `package.module:Class`. Resolved (and constructed once) while the config is validated,
so a typo is a one-line error before anything is set up."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from importlib.metadata import entry_points
from typing import Any

from testbed.abr.base import Controller
from testbed.abr.builtin import BudgetController, FixedController, RembController
from testbed.errors import ConfigError
from testbed.plugins import load_dotted

BUILTIN: dict[str, type[Any]] = {
    "fixed": FixedController,
    "remb": RembController,
    "budget": BudgetController,
}
GROUP = "rtc_testbed.abr"


def known() -> list[str]:
    return sorted({*BUILTIN, *(ep.name for ep in entry_points(group=GROUP))})


def resolve(name: str, src: str, key: str = "stream.abr") -> type[Any]:
    if name in BUILTIN:
        return BUILTIN[name]
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            loaded: type[Any] = ep.load()
            return loaded
    obj = load_dotted(name, src, key, known())
    if not callable(getattr(obj, "update", None)):
        raise ConfigError(src, key, f"{name!r} has no update(feedback) method")
    return obj  # type: ignore[no-any-return]


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
    except (TypeError, ValueError) as e:
        raise ConfigError(src, "stream.abr_params", f"{e} (for {name})") from None
    return controller
