"""The Stack protocol: one WebRTC implementation the testbed can run endpoints on.

A stack validates the stream keys only it has (its options), says which sources, codecs and
FEC schemes it supports, and gives the command that runs one endpoint process (sender or
receiver) inside its host. That process speaks the orchestrator's JSON-line protocol on
stdin/stdout (testbed.rtc.signaling) and writes an endpoint record (testbed.rtc.record) before
it exits; nothing else about a stack crosses into the session, the frame table or the analysis.

Stacks are found by name in STACKS (a dotted path, imported only when asked for).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from testbed.errors import ConfigError
from testbed.plugins import load_dotted


class StreamView(Protocol):
    """What a stack reads of a stream spec here (testbed.rtc.spec.StreamSpec has it): the
    spec module imports this one to find stacks, so this one does not import it back."""

    @property
    def source(self) -> str: ...

    @property
    def codec(self) -> str: ...

    @property
    def fec(self) -> dict[str, Any]: ...

    @property
    def audio(self) -> dict[str, Any]: ...

    def stack_of(self, role: str) -> str: ...


STACKS = {
    "aiortc": "testbed.rtc.aiortc.stack:AiortcStack",
    "chromium": "testbed.rtc.chromium.stack:ChromiumStack",
}
ROLES = ("sender", "receiver")


class Stack(Protocol):
    name: str
    option_keys: tuple[str, ...]  # stream keys only this stack has
    sources: tuple[str, ...]
    codecs: tuple[str, ...]
    fec_schemes: tuple[str, ...]
    audio_codecs: tuple[str, ...]
    audio_ptimes_ms: tuple[int, ...]  # audio frame lengths it can put in one packet
    native_abr: tuple[str, ...]  # abr names the stack implements itself (not in the registry)

    def parse_options(self, data: Mapping[str, Any], src: str) -> dict[str, Any]:
        """Its own keys, validated, with every default filled in (recorded in results)."""
        ...

    def check(self, spec: StreamView, src: str, roles: tuple[str, ...]) -> None:
        """Refuse (ConfigError naming the key) what this stack cannot do with the spec, in the
        roles it plays (sender, receiver or both)."""
        ...

    def endpoint_argv(self, role: str, spec_path: Path, out: Path) -> list[str]:
        """The command that runs one endpoint (role: sender | receiver) in its host."""
        ...


def get_stack(name: Any, src: str, key: str = "stream.stack") -> Stack:
    if not isinstance(name, str) or name not in STACKS:
        raise ConfigError(src, key, f"{name!r} is unknown; valid: {', '.join(STACKS)}")
    cls = load_dotted(STACKS[name], src, key, STACKS)
    stack: Stack = cls()
    return stack


def owners(option: str) -> list[str]:
    """The stacks that have this option key (for an error that says where a key belongs)."""
    return [n for n in STACKS if option in get_stack(n, "").option_keys]


class Offers(Protocol):
    """What a stack offers (every Stack has it)."""

    name: str
    sources: tuple[str, ...]
    codecs: tuple[str, ...]
    fec_schemes: tuple[str, ...]
    audio_codecs: tuple[str, ...]
    audio_ptimes_ms: tuple[int, ...]


def check_features(stack: Offers, spec: StreamView, src: str, roles: tuple[str, ...]) -> None:
    """The common part of Stack.check: source (a sender's), codec, FEC scheme and audio codec
    (both ends'), audio frame length (a sender's) among what it offers."""
    mixed = spec.stack_of("sender") != spec.stack_of("receiver")
    checks: list[tuple[str, Any, tuple[Any, ...], tuple[str, ...]]] = [
        ("source", spec.source, stack.sources, ("sender",)),
        ("codec", spec.codec, stack.codecs, ROLES),
        ("fec.scheme", spec.fec["scheme"], stack.fec_schemes, ROLES),
    ]
    if spec.audio.get("enabled"):
        checks += [("audio.codec", spec.audio["codec"], stack.audio_codecs, ROLES),
                   ("audio.ptime_ms", spec.audio["ptime_ms"], stack.audio_ptimes_ms, ("sender",))]  # fmt: skip
    for key, value, offered, needs in checks:
        if value not in offered and set(needs) & set(roles):
            pair = " (both ends of a mixed pair must offer it)" if mixed and len(needs) == 2 else ""
            raise ConfigError(src, f"stream.{key}", f"{value!r} is not offered by stack "
                              f"{stack.name}; valid: {', '.join(map(str, offered))}{pair}")  # fmt: skip
