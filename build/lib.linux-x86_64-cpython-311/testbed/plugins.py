"""User plug-ins (ABR controllers, ROI scorers) named by a dotted path `package.module:Class`."""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from importlib.metadata import entry_points
from typing import Any

from testbed.errors import ConfigError


def load_dotted(name: str, src: str, key: str, known: Iterable[str]) -> Any:
    """The object `package.module:Attr` names; otherwise one line naming the key and `known`."""
    names = ", ".join(known)
    if ":" not in name:
        raise ConfigError(src, key, f"{name!r} is unknown; known: {names}, or package.module:Class")
    module, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as e:
        raise ConfigError(src, key, f"{name!r} does not resolve ({e}); known: {names}") from None


def resolve_named(name: str, builtin: Mapping[str, Any], group: str, method: str, what: str,
                  src: str, key: str) -> Any:  # fmt: skip
    """A plug-in by name: a built-in (a class, or the dotted path of one), an entry point of
    `group`, or `package.module:Class`; a dotted one must have `method` (what: its signature,
    for the error). One rule for ABR controllers and viewer judges."""
    known = sorted({*builtin, *(ep.name for ep in entry_points(group=group))})
    if name in builtin:
        found = builtin[name]
        return load_dotted(found, src, key, known) if isinstance(found, str) else found
    for ep in entry_points(group=group):
        if ep.name == name:
            return ep.load()
    obj = load_dotted(name, src, key, known)
    if not callable(getattr(obj, method, None)):
        raise ConfigError(src, key, f"{name!r} has no {what} method")
    return obj
