"""What every command shares: the one-line failure, root check, --name, number lists."""

from __future__ import annotations

import os
import sys
from typing import Any, NoReturn

import click

from testbed.errors import ConfigError, TestbedError

NAME_HELP = "run name: the prefix of every namespace, interface and process this topology makes"


def fail(e: TestbedError) -> NoReturn:
    click.echo(f"testbed: error: {e}", err=True)
    sys.exit(e.exit_code)


def echo_prefixed(prefix: str, message: str) -> None:
    click.echo(prefix + message)


def numbers(option: str, text: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x]
    except ValueError:
        values = []
    if not values or any(v <= 0 for v in values):
        fail(ConfigError(option, text, "expected positive numbers, comma-separated, e.g. 1,2,4"))
    return values


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def require_root() -> None:
    if os.geteuid() != 0:
        fail(TestbedError("this command creates network namespaces: run it as root"))


def name_option(default: str | None = "tb", help_text: str = NAME_HELP) -> Any:
    return click.option("--name", "name", default=default, show_default=True, help=help_text)
