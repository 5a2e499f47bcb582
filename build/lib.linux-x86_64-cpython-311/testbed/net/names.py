"""Run-scoped names. Every kernel object carries the run's prefix; Linux allows 15 characters."""

from __future__ import annotations

IFNAMSIZ = 15


def netns_name(run: str, node: str) -> str:
    """Namespace of a host or of a link's router: '<run>-<node>'."""
    return f"{run}-{node}"


def ifname(run: str, link_index: int, role: str) -> str:
    """Interface name '<run>-<link index><role>', e.g. 'tb-0a' (host side A), 'tb-0up' (TUN)."""
    name = f"{run}-{link_index}{role}"
    if len(name) > IFNAMSIZ:
        raise ValueError(f"interface name {name!r} is longer than {IFNAMSIZ} characters")
    return name


def link_subnets(link_index: int) -> tuple[str, str]:
    """The /24 on each side of link i's router: side A (between[0]) and side B (between[1])."""
    if not 0 <= link_index < 127:
        raise ValueError("at most 127 links per topology")
    return f"10.77.{2 * link_index}", f"10.77.{2 * link_index + 1}"


HOST_OCTET = 1
ROUTER_OCTET = 254
