"""Backend names -> implementations, and which one this machine provides (the one place that
maps a name to a class and decides `auto`)."""

from __future__ import annotations

from dataclasses import dataclass

from testbed.errors import ConfigError, UnavailableError
from testbed.net.shaper import Backend
from testbed.shaping import netem
from testbed.shaping.capabilities import kernel_has_netem
from testbed.shaping.emu import EmuBackend
from testbed.shaping.netem import NetemBackend
from testbed.shaping.uml import UmlNetemBackend, uml_why_not


def make_backend(name: str) -> Backend:
    """`netem-uml` is netem inside a user-mode-linux router (kernels without sch_netem)."""
    if name == "emu":
        return EmuBackend()
    if name == "netem-uml":
        return UmlNetemBackend()
    if name == "netem":
        return NetemBackend(kernel_has_netem=True)
    raise ValueError(f"unknown backend {name!r}")


@dataclass(frozen=True)
class ResolvedBackend:
    """What `auto|emu|netem` became here: the name recorded, the reason, the implementation."""

    name: str
    reason: str
    backend: Backend


def resolve_backend(requested: str, run: str, source: str = "--backend") -> ResolvedBackend:
    """choose_backend + make_backend: what every command that builds links calls."""
    name, reason = choose_backend(requested, run, source)
    return ResolvedBackend(name, reason, make_backend(name))


def choose_backend(requested: str, run: str, source: str = "--backend") -> tuple[str, str]:
    """Resolve auto|emu|netem to a backend this machine provides, and say why.

    Raises ConfigError for an unknown name, UnavailableError when it cannot be provided.
    """
    if requested not in ("auto", "emu", "netem"):
        raise ConfigError(source, "backend", f"{requested!r} is unknown; valid: auto, emu, netem")
    if requested == "emu":
        return "emu", "asked for"
    if requested == "netem":
        try:
            has = kernel_has_netem(run)
        except OSError as e:
            raise UnavailableError(
                f"cannot probe the kernel for sch_netem ({e}); run as root"
            ) from e
        if has:
            netem.NetemBackend(has).ensure_available()
            return "netem", "asked for; the kernel has sch_netem"
        why_not = uml_why_not()
        if why_not is not None:
            raise UnavailableError(
                f"backend netem: this kernel has no sch_netem, and {why_not} (user-mode-linux is "
                "a kernel that has it, run as a process); use --backend emu"
            )
        return (
            "netem-uml",
            "asked for; this kernel has no sch_netem, so netem runs in a user-mode-linux router",
        )
    # auto: native netem where the kernel has it, the userspace emulator otherwise
    try:
        has = kernel_has_netem(run)
    except OSError as e:
        raise UnavailableError(f"cannot probe the kernel for sch_netem ({e}); run as root") from e
    if has:
        return "netem", "auto: the kernel has sch_netem"
    return "emu", (
        "auto: the kernel has no sch_netem, so the userspace emulator "
        "(--backend netem would run netem in a user-mode-linux router)"
    )
