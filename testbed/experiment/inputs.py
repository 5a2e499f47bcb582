"""A cell's input files, addressed by content: found in its job, hashed once on the client,
shipped to a worker as bytes and put back as a path in the worker's own cache.

A worker never sees a path that exists only on the client, and the experiment's digest covers
what the files hold, so editing a trace mid-sweep is refused like editing the experiment file.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# keys whose string values name files (a link's trace; the stream's video, ROI regions and
# weights; the AI viewer's question file; an accuracy-capped controller's curve); "builtin:..."
# values name nothing on disk
FILE_KEYS = frozenset({"trace", "video", "regions", "weights", "questions", "curve"})
CAS = "cas:"  # a job value "cas:SHA/NAME": the file with that content, named NAME


def _map(data: Any, fn: Callable[[str, str], str]) -> Any:
    """data with fn(key, value) applied to every string value of a mapping, at any depth."""
    if isinstance(data, Mapping):
        return {k: fn(str(k), v) if isinstance(v, str) else _map(v, fn) for k, v in data.items()}
    if isinstance(data, list):
        return [_map(v, fn) for v in data]
    return data


def _names_file(key: str, value: str) -> bool:
    return key in FILE_KEYS and not value.startswith(("builtin:", CAS))


def _file_values(job: Mapping[str, Any]) -> list[str]:
    found: list[str] = []

    def note(key: str, value: str) -> str:
        if _names_file(key, value):
            found.append(value)
        return value

    _map(job, note)
    return found


def input_paths(job: Mapping[str, Any]) -> list[str]:
    """The files a job names (existing files only: other values are validated elsewhere)."""
    return sorted({v for v in _file_values(job) if Path(v).is_file()})


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def addressed(job: dict[str, Any], hashes: Mapping[str, str]) -> dict[str, Any]:
    """The job with every input path replaced by cas:SHA/NAME (hashes: path -> sha256)."""

    out: dict[str, Any] = _map(
        job, lambda k, v: f"{CAS}{hashes[v]}/{Path(v).name}" if _names_file(k, v) and v in hashes
        else v,
    )  # fmt: skip
    return out


def cache_root() -> Path:
    return Path(os.environ.get("RTC_TESTBED_INPUT_CACHE", "/var/cache/rtc-testbed/inputs"))


def materialise(job: dict[str, Any], blobs: Mapping[str, bytes]) -> dict[str, Any]:
    """On the worker: write each blob once into the cache (checked against its hash, written
    atomically) and give the job real paths back."""

    def put(ref: str) -> str:
        sha, name = ref.removeprefix(CAS).split("/", 1)
        target = cache_root() / sha / name
        if not target.exists():
            data = blobs[sha]
            if hashlib.sha256(data).hexdigest() != sha:
                raise ValueError(f"input {name}: its bytes do not match their hash {sha[:12]}")
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{name}.{os.getpid()}")
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return str(target)

    out: dict[str, Any] = _map(job, lambda k, v: put(v) if v.startswith(CAS) else v)
    return out


def hashes_needed(job: Mapping[str, Any]) -> list[str]:
    """The content hashes an addressed job refers to."""
    found: set[str] = set()

    def note(key: str, value: str) -> str:
        if value.startswith(CAS):
            found.add(value.removeprefix(CAS).split("/", 1)[0])
        return value

    _map(job, note)
    return sorted(found)
