"""Static routes along the shortest paths of a topology: pure, no kernel.

The nodes are the hosts and the links' router namespaces; each link i joins its router to its
two hosts by two /24 subnets (names.link_subnets). A link's router always forwards; a host only
when it is a router host (`forward: true`). For every node and every subnet it is not on, the
route goes via the neighbour that is first on a shortest path (fewest hops) to a node on that
subnet, through forwarding nodes only; ties go to the link listed first, so the routes are the
same every time. A subnet no such path reaches gets no route (said by `unreachable`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from testbed.config import TopologySpec
from testbed.net import names


@dataclass(frozen=True)
class Attachment:
    """A node's address on one subnet."""

    node: str  # "host:NAME" or "link:NAME"
    subnet: str  # "10.77.4" (a /24)
    address: str


@dataclass(frozen=True)
class Route:
    node: str
    dst: str  # "10.77.4.0/24"
    via: str  # the next hop's address
    hops: int  # nodes on the way to the subnet (1: the next hop is on it)


def host_node(name: str) -> str:
    return f"host:{name}"


def link_node(name: str) -> str:
    return f"link:{name}"


def attachments(topo: TopologySpec) -> list[Attachment]:
    """Every (node, subnet, address), in link order: side A, then side B."""
    out = []
    for i, link in enumerate(topo.links):
        for host, net in zip(link.between, names.link_subnets(i), strict=True):
            out.append(Attachment(host_node(host), net, f"{net}.{names.HOST_OCTET}"))
            out.append(Attachment(link_node(link.name), net, f"{net}.{names.ROUTER_OCTET}"))
    return out


def compute_routes(topo: TopologySpec) -> list[Route]:
    """Every route every node needs, by node then subnet."""
    att = attachments(topo)
    on: dict[str, list[Attachment]] = {}  # subnet -> who is on it
    of: dict[str, list[Attachment]] = {}  # node -> its attachments
    for a in att:
        on.setdefault(a.subnet, []).append(a)
        of.setdefault(a.node, []).append(a)
    forwards = {n for n in of if n.startswith("link:")}
    forwards |= {host_node(h) for h in topo.forwarding}
    subnets = list(on)
    routes = []
    for node in of:
        first_hop = _first_hops(node, of, on, forwards)
        mine = {a.subnet for a in of[node]}
        for subnet in subnets:
            if subnet in mine:
                continue
            best = min(((first_hop[a.node][0], first_hop[a.node][1], a.node) for a in on[subnet]
                        if a.node in first_hop), default=None)  # fmt: skip
            if best is not None:
                hops, _order, target = best
                routes.append(Route(node, f"{subnet}.0/24", first_hop[target][2], hops))
    return routes


def _first_hops(
    source: str, of: dict[str, list[Attachment]], on: dict[str, list[Attachment]],
    forwards: set[str],
) -> dict[str, tuple[int, int, str]]:  # fmt: skip
    """BFS from source: node -> (hops, discovery order, the first hop's address)."""
    found: dict[str, tuple[int, int, str]] = {}
    queue: deque[tuple[str, int, str]] = deque()
    seen = {source}
    order = 0
    for a in of[source]:
        for b in on[a.subnet]:
            if b.node not in seen:
                seen.add(b.node)
                found[b.node] = (1, order, b.address)
                order += 1
                queue.append((b.node, 1, b.address))
    while queue:
        node, hops, first = queue.popleft()
        if node not in forwards:
            continue  # a host that does not forward: reachable, but nothing beyond it
        for a in of[node]:
            for b in on[a.subnet]:
                if b.node not in seen:
                    seen.add(b.node)
                    found[b.node] = (hops + 1, order, first)
                    order += 1
                    queue.append((b.node, hops + 1, first))
    return found


def unreachable(topo: TopologySpec) -> list[tuple[str, str]]:
    """Host pairs with no route between them (a path would need a host that does not forward)."""
    att = attachments(topo)
    reach: dict[str, set[str]] = {}
    for r in compute_routes(topo):
        reach.setdefault(r.node, set()).add(r.dst.removesuffix(".0/24"))
    for at in att:
        reach.setdefault(at.node, set()).add(at.subnet)
    out = []
    for i, src in enumerate(topo.hosts):
        for dst in topo.hosts[i + 1 :]:
            nets = {x.subnet for x in att if x.node == host_node(dst)}
            if not nets & reach.get(host_node(src), set()):
                out.append((src, dst))
    return out


def path(topo: TopologySpec, src: str, dst: str, routes: list[Route] | None = None) -> list[str]:
    """The links a packet from host src to host dst's first address crosses, in order ([]
    when there is no route)."""
    routes = compute_routes(topo) if routes is None else routes
    att = attachments(topo)
    owner = {a.address: a.node for a in att}
    target = next(a.subnet for a in att if a.node == host_node(dst))
    table = {(r.node, r.dst): r.via for r in routes}
    node, crossed = host_node(src), []
    for _ in range(2 * len(att)):
        if any(a.node == node and a.subnet == target for a in att):
            if node.startswith("link:"):
                crossed.append(node[5:])
            return crossed
        via = table.get((node, f"{target}.0/24"))
        if via is None:
            return []
        if node.startswith("link:"):
            crossed.append(node[5:])
        node = owner[via]
    return []


def endpoint_paths(topo: TopologySpec) -> list[str]:
    """One line per pair of hosts that do not forward: the links each way."""
    routes = compute_routes(topo)
    ends = [h for h in topo.hosts if h not in topo.forwarding]
    lines = []
    for i, a in enumerate(ends):
        for b in ends[i + 1 :]:
            there, back = path(topo, a, b, routes), path(topo, b, a, routes)
            way = " > ".join(there) or "no route"
            if back == there[::-1]:
                lines.append(f"{a} <-> {b}: {way}")
            else:
                lines.append(f"{a} -> {b}: {way}; back: {' > '.join(back) or 'no route'}")
    return lines
