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
    try:
        with open(tmp, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:  # a full disk, a signal: no half file beside the whole one
        tmp.unlink(missing_ok=True)
        raise


FULL_BELOW_BYTES = 1 << 20  # a file system with less free than this counts as full


def free_bytes(path: str | Path) -> int:
    """Bytes free to us on the file system holding PATH (or its nearest existing parent)."""
    p = Path(path).absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return st.f_bavail * st.f_frsize


def disk_full(path: str | Path) -> str | None:
    """'the disk holding PATH is full (N kB free): free space and rerun', or None when it is
    not."""
    free = free_bytes(path)
    if free >= FULL_BELOW_BYTES:
        return None
    return f"the disk holding {path} is full ({free // 1024} kB free): free space and rerun"


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


def staging_folder(final: Path) -> Path:
    """Where this process writes a folder before it is whole: beside FINAL (same file system,
    so publish_folder's rename is atomic), named for FINAL and this process."""
    return final.with_name(f".tmp-{final.name}-{os.getpid()}")


def publish_folder(staged: Path, final: Path) -> None:
    """Rename the whole STAGED folder to FINAL (absent or an empty folder), durably."""
    os.replace(staged, final)
    fsync_dir(final.parent)


def remove_dead_staging(final: Path) -> list[Path]:
    """Remove the staging folders for FINAL that processes no longer alive left (a kill -9
    cannot clean up): they were never results. Returns what was removed."""
    import shutil

    removed = []
    for p in final.parent.glob(f".tmp-{final.name}-*"):
        pid = p.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(p, ignore_errors=True)
            removed.append(p)
    return removed


def read_input_file(path: str | Path, what: str = "file") -> str:
    """The text of a user's input file; a missing or unreadable one is a ConfigError."""
    p = Path(path)
    try:
        return p.read_text()
    except FileNotFoundError:
        raise ConfigError(str(p), "", f"{what} not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(str(p), "", f"cannot read {what}: {e}") from None
