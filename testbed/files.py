"""Files written whole or not at all, and the user's input files read with one clear error."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from testbed.errors import ConfigError


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write beside PATH, fsync, then rename over it: a reader (or a crash) sees the old file or
    the new one, never half of one."""
    p = Path(path)
    tmp = p.with_name(f".{p.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)


def write_json_atomic(path: str | Path, data: Any, indent: int | None = 1) -> None:
    write_atomic(path, json.dumps(data, indent=indent, default=str))


def parquet_bytes(df: Any) -> bytes:
    """A DataFrame as Parquet bytes (for write_atomic)."""
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


def fsync_dir(path: str | Path) -> None:
    """Make a rename inside PATH durable (after os.replace of a file or folder in it)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_input_file(path: str | Path, what: str = "file") -> str:
    """The text of a user's input file; a missing or unreadable one is a ConfigError."""
    p = Path(path)
    try:
        return p.read_text()
    except FileNotFoundError:
        raise ConfigError(str(p), "", f"{what} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(p), "", f"cannot read {what}: {e}") from None
