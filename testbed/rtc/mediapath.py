"""Which links a session's media crosses, which one limits it, and which captured packets are
its own (the media 5-tuple). Pure: a topology, a stream spec, SDPs, captured rows."""

from __future__ import annotations

from typing import Any

import pandas as pd

from testbed.config import LinkSpec, TopologySpec
from testbed.errors import TestbedError
from testbed.rtc.signaling import candidate_port
from testbed.rtc.spec import StreamSpec


def media_hops(topology: TopologySpec, spec: StreamSpec) -> list[tuple[int, str]]:
    """The links the media crosses, in order, as (link index, direction): the link joining the
    two hosts, or the shortest path through router hosts (testbed.net.routes)."""
    from testbed.net.routes import path

    index = {lk.name: i for i, lk in enumerate(topology.links)}
    direct = [
        i for i, lk in enumerate(topology.links) if set(lk.between) == {spec.sender, spec.receiver}
    ]
    names_ = (
        [topology.links[direct[0]].name] if direct else path(topology, spec.sender, spec.receiver)
    )
    if not names_:
        raise TestbedError(f"no route from {spec.sender} to {spec.receiver} in {topology.source}: "
                           "a path needs router hosts (forward: true) between them")  # fmt: skip
    hops, at = [], spec.sender
    for name in names_:
        link = topology.links[index[name]]
        hops.append((index[name], "uplink" if link.between[0] == at else "downlink"))
        at = link.between[1] if link.between[0] == at else link.between[0]
    return hops


def _narrowest(topology: TopologySpec, hops: list[tuple[int, str]]) -> tuple[int, str]:
    """The hop that limits the media: the lowest rate; a trace or a schedule counts as
    narrower than any rate (it is what an experiment varies); none limited: the first."""

    def width(hop: tuple[int, str]) -> float:
        spec: LinkSpec = getattr(topology.links[hop[0]], hop[1])
        if spec.trace is not None or spec.schedule is not None:
            return -1.0
        return spec.rate_mbps if spec.rate_mbps is not None else float("inf")

    return min(hops, key=width)


def media_path(topology: TopologySpec, spec: StreamSpec) -> dict[str, Any]:
    """Which link and direction carry the media (the narrowest hop: its uplink when the sender
    is its first end), and every hop when there are several (cell.json's `path`: analysis
    reads this, never assumes)."""
    hops = media_hops(topology, spec)
    i, direction = _narrowest(topology, hops)
    out: dict[str, Any] = {"link": topology.links[i].name, "direction": direction}
    if len(hops) > 1:
        out["hops"] = [[topology.links[j].name, d] for j, d in hops]
    return out


def media_ports(
    offer: str, answer: str, sender_ip: str, receiver_ip: str
) -> tuple[int, int] | None:
    """(sender port, receiver port) of the media, from the host candidates each end offered;
    None when either is unclear (then the wire is filtered by address only)."""
    sport, dport = candidate_port(offer, sender_ip), candidate_port(answer, receiver_ip)
    return (sport, dport) if sport is not None and dport is not None else None


def media_flow(wire: pd.DataFrame, sender_ip: str, receiver_ip: str,
               ports: tuple[int, int] | None) -> pd.DataFrame:  # fmt: skip
    """The captured packets of the media direction (sender -> receiver), stray datagrams
    between the same hosts (cross traffic, hostile bursts) left out when the ports are known."""
    keep = (wire.src == sender_ip) & (wire.dst == receiver_ip)
    if ports is not None:
        keep &= (wire.sport == ports[0]) & (wire.dport == ports[1])
    return wire[keep]


def stray_datagrams(wire: pd.DataFrame, ip: str, ports: tuple[int, int] | None,
                    side: int) -> dict[str, int] | None:  # fmt: skip
    """UDP datagrams that reached an endpoint's media port from anywhere but its peer's media
    port (hostile bursts; the endpoint must drop them), counted from its own capture."""
    if ports is None:
        return None
    mine, peer = ports[side], ports[1 - side]
    to_me = wire[(wire.dst == ip) & (wire.dport == mine) & (wire.sport != peer)]
    return {"datagrams": len(to_me), "ip_bytes": int(to_me.ip_bytes.sum())}
