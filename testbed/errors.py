"""Errors the user can act on. Each message says what is wrong and what would be valid."""

from __future__ import annotations

from pathlib import Path


class TestbedError(Exception):
    """Base of every error the CLI turns into one line and a non-zero exit."""

    exit_code = 1


class ConfigError(TestbedError):
    """Bad input: a file, a key, a value. Raised before anything is set up (exit code 2)."""

    exit_code = 2

    def __init__(self, source: str, key: str, message: str) -> None:
        self.source = source
        self.key = key
        self.message = message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class UnavailableError(TestbedError):
    """The machine cannot provide what was asked (a backend, a kernel feature). Exit code 2."""

    exit_code = 2


class KernelError(TestbedError):
    """The kernel refused an operation while building; everything created so far is undone."""


class BusyError(TestbedError):
    """A topology with this name is already up."""

    exit_code = 2


def read_input_file(path: str | Path, what: str = "file") -> str:
    """The text of a user's input file; a missing or unreadable one is a ConfigError."""
    p = Path(path)
    try:
        return p.read_text()
    except FileNotFoundError:
        raise ConfigError(str(p), "", f"{what} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(p), "", f"cannot read {what}: {e}") from None


def strict_mapping(
    value: object, allowed: tuple[str, ...], src: str, key: str, example: str
) -> dict[str, object]:
    """A nested config mapping (stream.fec, stream.roi): a mapping, with only known keys."""
    from collections.abc import Mapping

    if not isinstance(value, Mapping):
        raise ConfigError(src, key, f"{value!r}: expected a mapping like {example}")
    for k in value:
        if k not in allowed:
            raise ConfigError(src, f"{key}.{k}", f"unknown key; valid: {', '.join(allowed)}")
    return dict(value)
