"""Build a TopologySpec into kernel state, and take it down again.

For link i between hosts A and B there are three namespaces' worth of plumbing:

    A: <run>-0a 10.77.2i.1/24 ===veth=== <run>-0ra 10.77.2i.254  [router ns <run>-<link>]
                                          <run>-0rb 10.77.2i+1.254 ===veth=== <run>-0b 10.77.2i+1.1 :B

The router namespace is the link: each direction is shaped there by the backend (uplink =
A -> B on packets entering from <run>-0ra, downlink on those entering from <run>-0rb). Nothing is
created in the host's own namespace; everything is recorded in the run's ledger first.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from testbed.config import LinkDef, TopologySpec, validate_run_name
from testbed.errors import BusyError, Interrupted, KernelError, TestbedError, UnavailableError
from testbed.net import forkguard, names, netns
from testbed.net.containers import hosts as containers
from testbed.net.containers.hosts import ContainerHostInfo
from testbed.net.ledger import (
    OWNED_FILE_ENV,
    Ledger,
    dead_link_processes,
    deferred_signals,
    process_start_ticks,
)
from testbed.net.shaper import Backend, DirectionPlan


@dataclass(frozen=True)
class HostInfo:
    name: str
    netns: str
    address: str
    container: ContainerHostInfo | None = None  # a container host's container


@dataclass
class NetworkInfo:
    """What `testbed up` leaves behind for `exec`, `down` and the analysis (state.json)."""

    run: str
    topology: str
    backend: str
    backend_reason: str
    seed: int
    log_dir: str
    hosts: dict[str, HostInfo]
    links: dict[str, dict[str, Any]] = field(default_factory=dict)
    created_real_ns: int = 0
    routes: list[list[str]] = field(default_factory=list)  # [node, dst, via] (routes.py)

    def env(self) -> dict[str, str]:
        """TB_ADDR_<HOST> for every host: what `testbed exec` puts in the environment."""
        return {f"TB_ADDR_{h.upper()}": info.address for h, info in self.hosts.items()}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> NetworkInfo:
        data = json.loads(text)
        hosts = {}
        for k, v in data["hosts"].items():
            c = v.pop("container", None)
            hosts[k] = HostInfo(**v, container=ContainerHostInfo(**c) if c else None)
        data["hosts"] = hosts
        return cls(**data)


def state_path(ledger: Ledger) -> Path:
    return ledger.dir / "state.json"


def load_state(run: str) -> NetworkInfo:
    ledger = Ledger(run)
    path = state_path(ledger)
    if not path.exists() or ledger.is_empty():
        raise TestbedError(f"no topology {run!r} is up; start one with `testbed up TOPOLOGY`")
    return NetworkInfo.from_json(path.read_text())


def _seed_for(base: int, link_index: int, direction: str) -> int:
    return (base * 1_000_003 + link_index * 2 + (direction == "downlink")) % (2**63)


_unwinding: list[int] = []  # the signal being unwound from, once one came (this process)
_depth: list[int] = []  # one entry per terminate_unwinds block open in this process


@contextmanager
def terminate_unwinds() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP raise Interrupted (a KeyboardInterrupt), so what was made is
    undone and the command exits 128 + the signal.

    SIGINT is set here too, not left as inherited: a process started in the background by a
    non-interactive shell inherits SIGINT *ignored*, and Python then never raises
    KeyboardInterrupt; a `kill -INT` of such a stream was lost and it ran on to exit 0.
    Only the first signal raises: one that comes while the first is being unwound (Ctrl-C
    pressed twice, or a cell's SIGTERM from its runner and from its parent's death) would cut
    the unwind in half and leave what it had not yet removed; it is said and ignored.
    Main thread only; nests (the innermost handler wins, the outer one is restored after).
    """

    owner = os.getpid()

    def handler(signum: int, frame: FrameType | None) -> None:
        if os.getpid() != owner:  # a forked helper (pyroute2 forks one per NetNS) just exits
            os._exit(128 + signum)
        if forkguard.held(signum, frame):  # raised in a fork's callback, it would be dropped
            return
        if _unwinding:
            os.write(2, f"testbed: {signal.Signals(signum).name} ignored: still removing what "
                     f"was made; to force: kill -9 {owner}, then `testbed clean`\n".encode())  # fmt: skip
            return
        _unwinding.append(signum)
        raise Interrupted(signum)

    forkguard.install()  # a handler run inside a fork's callbacks would be dropped
    old = {s: signal.signal(s, handler) for s in forkguard.UNWIND_SIGNALS}
    _depth.append(owner)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        _depth.pop()
        if not _depth:  # the outermost block: a later run in this process starts afresh
            _unwinding.clear()


class Network:
    """A topology brought up under a run name. Use as a context manager, or start()/stop().

    start() undoes everything it made if it fails or is interrupted; stop() is idempotent.
    """

    def __init__(
        self,
        topology: TopologySpec,
        backend: Backend,
        run: str = "tb",
        backend_reason: str = "",
        log_dir: str | Path | None = None,
        seed: int | None = None,
        mounts: Sequence[Path] = (),
    ) -> None:
        """mounts: folders every container host sees at the same path (a session's output)."""
        self.topology = topology
        self.mounts = tuple(mounts)
        self.containers: dict[str, ContainerHostInfo] = {}
        self.backend = backend
        self.run = validate_run_name(run)
        self.backend_reason = backend_reason
        self.ledger = Ledger(run)
        self.log_dir = Path(log_dir) if log_dir else self.ledger.dir / "logs"
        if seed is None:
            seed = topology.seed if topology.seed is not None else int.from_bytes(os.urandom(4))
        self.seed = seed
        self.info: NetworkInfo | None = None

    # --- lifecycle -------------------------------------------------------------------------
    def start(
        self, say: Callable[[str], None] = lambda _: None, detached: bool = False
    ) -> NetworkInfo:
        """Build the topology. detached: it outlives this process (`testbed up`), so `clean`
        keeps it while it is up; otherwise it is live while this process runs."""
        self.backend.check(self.topology)
        if self.topology.forwarding and getattr(self.backend, "build_link", None) is not None:
            raise UnavailableError(f"backend {self.backend.name} builds its own routers "
                                   "(user-mode-linux): routed topologies (router hosts) need "
                                   "--backend emu")  # fmt: skip
        containers.preflight(self.topology)
        self.ledger.lock()
        try:
            if not self.ledger.is_empty():
                raise BusyError(
                    f"topology {self.run!r} is already up; `testbed down --name {self.run}` "
                    "first, or choose another --name"
                )
            self.ledger.claim(detached)
            self.log_dir.mkdir(parents=True, exist_ok=True)
            with terminate_unwinds():
                try:
                    self.info = self._build(say)
                except BaseException as e:
                    dead = self.died() if isinstance(e, Exception) else []  # the cause, if any
                    with deferred_signals():  # a second signal must not cut the undo in half
                        self.ledger.undo()
                    if dead:
                        raise KernelError(f"building the topology failed: {'; '.join(dead)}") from e
                    raise
            state_path(self.ledger).write_text(self.info.to_json())
            return self.info
        finally:
            self.ledger.release_if_empty()  # after a failed build, nothing is left

    def stop(self) -> None:
        """Undo everything, with signals held until it is done (one that came meanwhile is
        raised after: the command still exits 128 + N, with nothing left)."""
        self.ledger.lock()
        try:
            with deferred_signals():
                self.ledger.undo()
            state_path(self.ledger).unlink(missing_ok=True)
        finally:
            self.ledger.release_if_empty()

    @staticmethod
    def take_down(run: str) -> tuple[int, NetworkInfo | None] | None:
        """Tear down what `up` left under RUN (from its ledger): (objects removed, the info it
        recorded), or None if nothing is up. The same undo as stop(), without the spec."""
        ledger = Ledger(run)
        ledger.lock()
        try:
            if ledger.is_empty():
                return None
            state = state_path(ledger)
            info = NetworkInfo.from_json(state.read_text()) if state.exists() else None
            removed = ledger.undo()
            state.unlink(missing_ok=True)
            return removed, info
        finally:
            ledger.release_if_empty()

    def __enter__(self) -> Network:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- building ----------------------------------------------------------------------------
    def _build(self, say: Callable[[str], None]) -> NetworkInfo:
        run, topo = self.run, self.topology
        hosts: dict[str, HostInfo] = {}
        for host in topo.hosts:
            spec = topo.container(host)
            if spec is None:  # a router host forwards (ip_forward, no rp_filter)
                netns.create(
                    self.ledger, names.netns_name(run, host), router=host in topo.forwarding
                )
            else:
                say(f"host {host}: container of {spec.image}")
                self.containers[host] = containers.start_host(
                    self.ledger, spec, names.netns_name(run, host), self.mounts, topo.source
                )
        links: dict[str, dict[str, Any]] = {}
        for i, link in enumerate(topo.links):
            links[link.name] = self._build_link(i, link, hosts, say)
        installed = self._install_routes()
        return NetworkInfo(
            run=run,
            topology=topo.source,
            backend=self.backend.name,
            backend_reason=self.backend_reason,
            seed=self.seed,
            log_dir=str(self.log_dir),
            hosts=hosts,
            links=links,
            created_real_ns=time.time_ns(),
            routes=installed,
        )

    def _build_link(
        self, i: int, link: LinkDef, hosts: dict[str, HostInfo], say: Callable[[str], None]
    ) -> dict[str, Any]:
        from pyroute2 import NetNS
        from pyroute2.netlink.exceptions import NetlinkError

        build_link = getattr(self.backend, "build_link", None)
        if build_link is not None:  # the backend brings its own router (user-mode-linux)
            info: dict[str, Any] = build_link(self, i, link, hosts, say)
            return info
        run = self.run
        router = names.netns_name(run, link.name)
        netns.create(self.ledger, router, router=True)
        net_a, net_b = names.link_subnets(i)
        a, b = link.between
        sides = [
            (a, names.ifname(run, i, "a"), names.ifname(run, i, "ra"), net_a, net_b),
            (b, names.ifname(run, i, "b"), names.ifname(run, i, "rb"), net_b, net_a),
        ]
        try:
            for host, host_if, router_if, net, far in sides:
                host_ns = names.netns_name(run, host)
                addr = f"{net}.{names.HOST_OCTET}"
                gateway = f"{net}.{names.ROUTER_OCTET}"
                with NetNS(router) as r:
                    r.link(
                        "add",
                        ifname=router_if,
                        kind="veth",
                        peer={"ifname": host_if, "net_ns_fd": host_ns},
                    )
                    idx = r.link_lookup(ifname=router_if)[0]
                    r.addr("add", index=idx, address=gateway, prefixlen=24)
                    r.link("set", index=idx, state="up")
                self.configure_host_interface(host_ns, host_if, addr, gateway, far)
                hosts.setdefault(host, self.host_info(host, host_ns, addr))
        except NetlinkError as e:
            raise KernelError(f"building link {link.name!r} failed: {e}") from e
        info = {"index": i, "router_netns": router, "between": list(link.between)}
        for direction, spec, in_if, out_if in (
            ("uplink", link.uplink, sides[0][2], sides[1][2]),
            ("downlink", link.downlink, sides[1][2], sides[0][2]),
        ):
            plan = DirectionPlan(
                run=run,
                link=link.name,
                link_index=i,
                direction=direction,
                router_ns=router,
                in_ifname=in_if,
                out_ifname=out_if,
                spec=spec,
                seed=_seed_for(self.seed, i, direction),
                log_dir=self.log_dir,
                tick_us=self.topology.emulator_tick_us,
            )
            info[direction] = {
                "spec": spec.to_dict(),
                "seed": plan.seed,
                **self.backend.install(plan, self.ledger),
            }
            say(f"link {link.name} {direction}: {describe_spec(spec.to_dict())}")
        return info

    def _install_routes(self) -> list[list[str]]:
        """The static routes of the topology's shortest paths (testbed.net.routes) in every
        host and link router; a route a link already made (a host to its link's far side) is
        replaced by the same. Only routed topologies (router hosts) add more than those."""
        from pyroute2 import NetNS
        from pyroute2.netlink.exceptions import NetlinkError

        from testbed.net.routes import compute_routes

        routes = compute_routes(self.topology)
        by_node: dict[str, list[tuple[str, str]]] = {}
        for r in routes:
            by_node.setdefault(r.node, []).append((r.dst, r.via))
        for node, entries in by_node.items():
            ns_name = names.netns_name(self.run, node.split(":", 1)[1])
            try:
                with NetNS(ns_name) as ns:
                    for dst, via in entries:
                        ns.route("replace", dst=dst, gateway=via)
            except NetlinkError as e:
                raise KernelError(f"routes in {ns_name} failed: {e}") from e
        return [[r.node, r.dst, r.via] for r in routes]

    def configure_host_interface(
        self, host_ns: str, ifname: str, addr: str, gateway: str, far_net: str
    ) -> None:
        """Address a host's side of a link, bring it up, route the far side via the router."""
        from pyroute2 import NetNS

        with NetNS(host_ns) as h:
            idx = h.link_lookup(ifname=ifname)[0]
            h.addr("add", index=idx, address=addr, prefixlen=24)
            h.link("set", index=idx, state="up")
            h.route("add", dst=f"{far_net}.0/24", gateway=gateway)

    def host_info(self, name: str, host_ns: str, address: str) -> HostInfo:
        return HostInfo(name, host_ns, address, self.containers.get(name))

    # --- running things inside hosts ---------------------------------------------------------
    def popen(
        self,
        host: str,
        cmd: Sequence[str],
        owns: str | None = None,
        in_image: bool = False,
        **kw: Any,
    ) -> subprocess.Popen[Any]:
        """Start CMD in HOST; recorded in the ledger, so `down` and `clean` end it too.

        owns: a name for the processes CMD itself starts (a browser and its helpers): CMD gets
        the path of a file in the run's state folder (env TESTBED_OWNED_FILE) to note them in
        (ledger.note_owned), recorded before CMD starts, and ended with it. in_image: in a
        container host, run CMD in the container (its files and environment), not only in its
        network namespace (captures and traffic tools are the host's own)."""
        assert self.info is not None, "start() the network first"
        env = self.info.env()
        info = self.info.hosts[host]
        inside = info.container if in_image else None
        owned: str | None = None
        if owns is not None and inside is None:  # the state folder is not in a container
            owned = str(self.ledger.dir / f"owned-{owns}.txt")
            env[OWNED_FILE_ENV] = owned
        index = self.ledger.record("process", what=f"{cmd[0]} in {host}", owned_file=owned)
        with deferred_signals():  # a signal in between would leave a process the ledger lacks
            if inside is not None:
                proc = subprocess.Popen(list(cmd), env=containers.environment(inside, env),
                                        preexec_fn=containers.entering(inside), **kw)  # fmt: skip
            else:
                proc = netns.popen(info.netns, cmd, env=env, **kw)
            self.ledger.update(index, pid=proc.pid, start_ticks=process_start_ticks(proc.pid))
        return proc

    def died(self) -> list[str]:
        """Link processes that stopped while the topology was up, in words (empty: none)."""
        return dead_link_processes(self.ledger)

    def run_in(
        self, host: str, cmd: Sequence[str], timeout: float | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        assert self.info is not None, "start() the network first"
        return netns.run(
            self.info.hosts[host].netns, cmd, env=self.info.env(), timeout=timeout, check=check
        )

    def address(self, host: str) -> str:
        assert self.info is not None, "start() the network first"
        return self.info.hosts[host].address


def describe_spec(spec: Mapping[str, Any]) -> str:
    """A one-line human summary of a LinkSpec dict."""
    parts = []
    if spec.get("rate_mbps"):
        parts.append(f"{spec['rate_mbps']:g} Mbps")
    elif spec.get("trace"):
        parts.append(f"trace {Path(spec['trace']).name}")
    else:
        parts.append("unlimited rate")
    parts.append(f"{spec.get('delay_ms', 0):g} ms")
    if spec.get("jitter_ms"):
        parts.append(f"±{spec['jitter_ms']:g} ms jitter")
    ge = spec.get("gilbert_elliott")
    if ge:
        parts.append(f"GE loss p={ge['p_pct']:g}% r={ge['r_pct']:g}%")
    else:
        parts.append(f"{spec.get('loss_pct', 0):g}% loss")
    if spec.get("queue_packets"):
        parts.append(f"queue {spec['queue_packets']} pkts")
    if spec.get("queue_bytes"):
        parts.append(f"queue {spec['queue_bytes']} B")
    if spec.get("queue_ms"):
        parts.append(f"queue {spec['queue_ms']:g} ms")
    queue = spec.get("queue")
    if queue:
        params = " ".join(f"{k}={v:g}" for k, v in queue.items() if k != "discipline")
        parts.append(f"{queue['discipline']} ({params})" if params else queue["discipline"])
    if spec.get("ecn"):
        parts.append("ECN")
    return ", ".join(parts)
