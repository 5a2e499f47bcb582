"""YAML as users write it: PyYAML's safe loader, with YAML 1.2 numbers.

PyYAML follows YAML 1.1, where `1e-5` (no dot) is a string; users write it as a number, so the
loader resolves every YAML 1.2 float form as a float. Everything else is safe_load's.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from testbed.errors import ConfigError
from testbed.files import read_input_file


class Loader(yaml.SafeLoader):
    """safe_load + YAML 1.2 floats (1e-5, 2E3, .5, -1.5e+2)."""


Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |[-+]?\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def loads(text: str) -> Any:
    return yaml.load(text, Loader=Loader)


def read_yaml(path: str | Path) -> Any:
    """A YAML file; malformed YAML is a ConfigError naming the file and the line."""
    p = Path(path)
    text = read_input_file(p)
    try:
        return loads(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(str(p), where, f"malformed YAML: {problem}") from None
