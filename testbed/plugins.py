"""User plug-ins (ABR controllers, ROI scorers) named by a dotted path `package.module:Class`."""

from __future__ import annotations

import importlib
from collections.abc import Iterable
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
