"""Topology and link specifications, loaded strictly from YAML.

Every key has its unit in its name. Unknown keys, values out of range and values of the wrong
type are a ConfigError naming the file, the key path and what would be valid, raised before
anything is set up.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from testbed import validate
from testbed.config.queues import AQM, DROPTAIL, QueueSpec, parse_queue
from testbed.config.schedule import GilbertElliottSpec, ScheduleSpec, Segment, parse_schedule
from testbed.config.sessions import SessionDef, parse_sessions
from testbed.config.traces import LOSS_UNITS, read_link_trace
from testbed.config.traffic import FlowSpec, parse_flows
from testbed.errors import ConfigError
from testbed.yamlio import loads, read_yaml

BACKENDS = ("auto", "emu", "netem")
NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,11}$")
RUN_NAME_RE = re.compile(r"^[a-z][a-z0-9]{0,5}$")
DEFAULT_QUEUE_PACKETS = 1000


@dataclass(frozen=True)
class LinkSpec:
    """One direction of a link: loss -> droptail queue -> rate or trace -> delay (+ jitter).

    rate_mbps counts IP packet bytes (as Mahimahi does). Neither rate nor trace = no rate limit.
    trace: a Mahimahi trace (delivery opportunities). schedule: segments that change rate,
    delay, jitter and loss over time (testbed.config.schedule), inline, from a schedule file, or
    converted from an OpenNetLab / cooked trace file given as `trace:`.
    queue_packets / queue_bytes / queue_ms: limits on what waits for the link (None = none);
    queue_ms: a packet is dropped on arrival when the backlog ahead of it would take longer than
    this to leave the link at the capacity in force (rate, trace or schedule).
    queue: the discipline (testbed.config.queues; droptail by default). ecn: the AQM marks ECT
    packets CE instead of dropping them. The three appear in to_dict only when set, so links
    without them keep the dict and the digest they always had.
    """

    rate_mbps: float | None = None
    trace: str | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    gilbert_elliott: GilbertElliottSpec | None = None
    queue_packets: int | None = DEFAULT_QUEUE_PACKETS
    queue_bytes: int | None = None
    schedule: ScheduleSpec | None = None
    queue: QueueSpec = DROPTAIL
    queue_ms: float | None = None
    ecn: bool = False

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _SET_ONLY and value == f.default:
                continue
            if isinstance(value, QueueSpec):
                value = value.to_dict()
            elif isinstance(value, GilbertElliottSpec):
                value = {g.name: getattr(value, g.name) for g in fields(value)}
            elif isinstance(value, ScheduleSpec):
                value = value.to_dict()
            out[f.name] = value
        return out


_SET_ONLY = ("queue", "queue_ms", "ecn")  # omitted from to_dict while at their defaults


@dataclass(frozen=True)
class LinkDef:
    """A link between two hosts: uplink = between[0] -> between[1], downlink the reverse."""

    name: str
    between: tuple[str, str]
    uplink: LinkSpec
    downlink: LinkSpec


@dataclass(frozen=True)
class ContainerSpec:
    """A host that is a container (`image:` on its host entry) instead of a bare namespace.

    command: the container's own main process (default: the image's; it must keep running).
    endpoint: the program that runs one endpoint inside it (it gets `ROLE --spec FILE --out DIR`
    after it); default: the stack's own, with `python3` from the image's PATH.
    env: extra environment for everything started inside it.
    """

    host: str
    image: str
    command: tuple[str, ...] | None = None
    endpoint: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.host, "image": self.image}
        if self.command is not None:
            out["command"] = list(self.command)
        if self.endpoint is not None:
            out["endpoint"] = list(self.endpoint)
        if self.env:
            out["env"] = dict(self.env)
        return out


@dataclass(frozen=True)
class TopologySpec:
    name: str
    hosts: tuple[str, ...]
    links: tuple[LinkDef, ...]
    backend: str = "auto"
    seed: int | None = None
    source: str = "<memory>"
    cross_traffic: tuple[FlowSpec, ...] = ()
    # emu only: release wake-ups at most once per this many us (0: each release on time);
    # trades precision for CPU (docs/emulator.md). netem backends ignore it.
    emulator_tick_us: float = 0.0
    containers: tuple[ContainerSpec, ...] = ()  # the hosts that are containers
    forwarding: tuple[str, ...] = ()  # router hosts: they forward between the links they join
    sessions: tuple[SessionDef, ...] = ()  # several media sessions in a cell (config.sessions)

    def container(self, host: str) -> ContainerSpec | None:
        """The host's container, or None for a namespace host."""
        return next((c for c in self.containers if c.host == host), None)

    def to_dict(self) -> dict[str, Any]:
        """The topology as parse_topology reads it (trace paths absolute): what a cell's job
        carries, so a cell runs exactly what its experiment resolved, re-validated on arrival."""
        return {
            "name": self.name,
            "hosts": [self._host_dict(h) for h in self.hosts],
            "links": [{"name": lk.name, "between": list(lk.between), "uplink": lk.uplink.to_dict(),
                       "downlink": lk.downlink.to_dict()} for lk in self.links],
            "backend": self.backend,
            "seed": self.seed,
            "cross_traffic": [f.to_dict() for f in self.cross_traffic],
            # only when set: topologies without it keep the digest they always had
            **({"emulator_tick_us": self.emulator_tick_us} if self.emulator_tick_us else {}),
            **({"sessions": [x.to_dict() for x in self.sessions]} if self.sessions else {}),
        }  # fmt: skip

    def _host_dict(self, host: str) -> Any:
        """A host as parse_topology reads it: its name alone unless it is more."""
        c = self.container(host)
        entry: dict[str, Any] = c.to_dict() if c else {"name": host}
        if host in self.forwarding:
            entry["forward"] = True
        return entry if len(entry) > 1 else host

    def link(self, name: str) -> LinkDef:
        for link in self.links:
            if link.name == name:
                return link
        raise KeyError(name)


# --- strict field readers ---------------------------------------------------------------


def _check_keys(data: Mapping[str, Any], allowed: Sequence[str], src: str, path: str) -> None:
    validate.check_keys(data, allowed, src, path, label="valid keys")


def _mapping(value: Any, src: str, path: str) -> Mapping[str, Any]:
    return validate.mapping(value, src, path)


def _number(
    data: Mapping[str, Any],
    key: str,
    src: str,
    path: str,
    default: float | None,
    lo: float,
    hi: float,
    lo_open: bool = False,
) -> float | None:
    value = data.get(key, default)
    if value is None:
        return None
    return validate.number(value, src, f"{path}.{key}", lo, hi, lo_open=lo_open)


def _integer(
    data: Mapping[str, Any], key: str, src: str, path: str, default: int | None, lo: int
) -> int | None:
    value = data.get(key, default)
    if value is None:
        return None
    return validate.integer(value, src, f"{path}.{key}" if path else key, lo)


def _name(value: Any, src: str, where: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ConfigError(
            src,
            where,
            f"{value!r} is not a valid name; valid: lower-case letters and digits, "
            "starting with a letter, at most 12 characters",
        )
    return value


def parse_gilbert_elliott(value: Any, src: str, path: str) -> GilbertElliottSpec:
    data = _mapping(value, src, path)
    allowed = [f.name for f in fields(GilbertElliottSpec)]
    _check_keys(data, allowed, src, path)
    for required in ("p_pct", "r_pct"):
        if required not in data:
            raise ConfigError(src, f"{path}.{required}", "missing; a percentage in [0, 100]")
    return GilbertElliottSpec(
        p_pct=_number(data, "p_pct", src, path, None, 0, 100) or 0.0,
        r_pct=_number(data, "r_pct", src, path, None, 0, 100) or 0.0,
        loss_bad_pct=_number(data, "loss_bad_pct", src, path, 100.0, 0, 100) or 0.0,
        loss_good_pct=_number(data, "loss_good_pct", src, path, 0.0, 0, 100) or 0.0,
    )


def parse_link_spec(value: Any, src: str, path: str, base_dir: Path) -> LinkSpec:
    """Build one direction's LinkSpec; a trace path is resolved against base_dir and parsed."""
    data = _mapping(value if value is not None else {}, src, path)
    _check_keys(data, [*(f.name for f in fields(LinkSpec)), *TRACE_OPTIONS], src, path)
    rate = _number(data, "rate_mbps", src, path, None, 0, 100_000, lo_open=True)
    ge = None
    if data.get("gilbert_elliott") is not None:
        ge = parse_gilbert_elliott(data["gilbert_elliott"], src, f"{path}.gilbert_elliott")
    loss = _number(data, "loss_pct", src, path, 0.0, 0, 100) or 0.0
    if ge is not None and loss > 0:
        raise ConfigError(
            src, f"{path}.loss_pct", "give either loss_pct (bernoulli) or gilbert_elliott, not both"
        )
    delay = _number(data, "delay_ms", src, path, 0.0, 0, 60_000) or 0.0
    jitter = _number(data, "jitter_ms", src, path, 0.0, 0, 60_000) or 0.0
    base = Segment(0.0, rate, delay, jitter, loss, ge)  # where a schedule starts from
    trace = data.get("trace")
    trace_path: str | None = None
    schedule: ScheduleSpec | None = None
    if trace is not None:
        if not isinstance(trace, str) or not trace:
            raise ConfigError(src, f"{path}.trace", f"{trace!r} is not a path to a trace file")
        if rate is not None:
            raise ConfigError(src, f"{path}.trace", "give either rate_mbps or trace, not both")
        p = Path(trace)
        if not p.is_absolute():
            p = base_dir / p
        read = _read_trace(str(p.resolve()), data, src, path, base)
        if isinstance(read, ScheduleSpec):
            schedule = read
        else:
            trace_path = read.path
    if data.get("schedule") is not None:
        if schedule is not None or trace_path is not None:
            raise ConfigError(src, f"{path}.schedule", "give either trace or schedule, not both")
        schedule = _schedule(data["schedule"], data, src, f"{path}.schedule", base_dir, base)
    queue = parse_queue(data["queue"], src, f"{path}.queue") if "queue" in data else DROPTAIL
    queue_ms = _number(data, "queue_ms", src, path, None, 0, 60_000, lo_open=True)
    if queue_ms is not None and rate is None and trace_path is None and schedule is None:
        raise ConfigError(src, f"{path}.queue_ms", "a queue in ms needs a capacity to convert it "
                          "at: give rate_mbps, a trace or a schedule, or use queue_packets")  # fmt: skip
    ecn = data.get("ecn", False)
    if not isinstance(ecn, bool):
        raise ConfigError(src, f"{path}.ecn", f"{ecn!r} is not true or false")
    if ecn and queue.discipline not in AQM:
        raise ConfigError(src, f"{path}.ecn", f"{queue.discipline} never marks; ECN needs queue: "
                          f"{' | '.join(AQM)}")  # fmt: skip
    return LinkSpec(
        rate_mbps=rate,
        trace=trace_path,
        delay_ms=delay,
        jitter_ms=jitter,
        loss_pct=loss,
        gilbert_elliott=ge,
        queue_packets=_integer(data, "queue_packets", src, path, DEFAULT_QUEUE_PACKETS, 1),
        queue_bytes=_integer(data, "queue_bytes", src, path, None, 1500),
        schedule=schedule,
        queue=queue,
        queue_ms=queue_ms,
        ecn=ecn,
    )


TRACE_OPTIONS = ("trace_pattern", "trace_loss_unit", "trace_rtt_share")


def _read_trace(path: str, data: Mapping[str, Any], src: str, where: str, base: Segment) -> Any:
    """A trace file of any format (testbed.config.traces); OpenNetLab and cooked ones become
    schedules. trace_pattern (uplink | downlink: which of an OpenNetLab file's patterns;
    default: this direction's), trace_loss_unit (percent | fraction), trace_rtt_share (the share
    of an entry's rtt that is this direction's delay; 0.5)."""
    direction = where.rsplit(".", 1)[-1]
    pattern = validate.choice(data.get("trace_pattern", direction if direction in ("uplink", "downlink") else "uplink"),
                              ("uplink", "downlink"), src, f"{where}.trace_pattern")  # fmt: skip
    unit = data.get("trace_loss_unit")
    if unit is not None:
        validate.choice(unit, LOSS_UNITS, src, f"{where}.trace_loss_unit")
    share = validate.number(data.get("trace_rtt_share", 0.5), src, f"{where}.trace_rtt_share", 0, 1)
    try:
        return read_link_trace(path, pattern, unit, share, base)
    except ConfigError as e:
        raise ConfigError(src, f"{where}.trace", str(e)) from None


def _schedule(
    value: Any, data: Mapping[str, Any], src: str, where: str, base_dir: Path, base: Segment
) -> ScheduleSpec:
    """An inline schedule, or a schedule file (YAML/JSON mapping) or a trace file of segments."""
    if isinstance(value, str):
        p = Path(value) if Path(value).is_absolute() else base_dir / value
        p = p.resolve()
        if p.suffix.lower() in (".yaml", ".yml"):
            raw = read_yaml(p)
            spec = parse_schedule(raw, str(p), "schedule", base)
            return ScheduleSpec(spec.segments, spec.at_end, str(p))
        read = _read_trace(str(p), data, src, where, base)
        if not isinstance(read, ScheduleSpec):
            raise ConfigError(
                src, where, f"{p}: a Mahimahi trace is not a schedule; give it as trace:"
            )
        return read
    return parse_schedule(value, src, where, base)


TOPOLOGY_KEYS = ("name", "hosts", "links", "backend", "seed", "cross_traffic", "emulator_tick_us",
                 "sessions")  # fmt: skip
MAX_TICK_US = 100_000.0
LINK_KEYS = ("name", "between", "uplink", "downlink")


def parse_topology(raw: Any, src: str, base_dir: Path) -> TopologySpec:
    data = _mapping(raw, src, "")
    _check_keys(data, TOPOLOGY_KEYS, src, "")
    name = _name(data.get("name", Path(src).stem.replace("-", "")[:12] or "topo"), src, "name")
    hosts_raw = data.get("hosts")
    if not isinstance(hosts_raw, list) or not hosts_raw:
        raise ConfigError(src, "hosts", "expected a non-empty list of host names")
    entries = [_host_entry(h, src, f"hosts[{i}]") for i, h in enumerate(hosts_raw)]
    hosts = tuple(h for h, _, _ in entries)
    if len(set(hosts)) != len(hosts):
        raise ConfigError(src, "hosts", f"host names repeat: {list(hosts)}")
    links_raw = data.get("links")
    if not isinstance(links_raw, list) or not links_raw:
        raise ConfigError(src, "links", "expected a non-empty list of links")
    links: list[LinkDef] = []
    for i, item in enumerate(links_raw):
        item = _mapping(item, src, f"links[{i}]")
        lname = _name(item.get("name", f"link{i}"), src, f"links[{i}].name")
        path = f"links.{lname}"
        _check_keys(item, LINK_KEYS, src, path)
        between = item.get("between")
        if (
            not isinstance(between, list)
            or len(between) != 2
            or any(h not in hosts for h in between)
            or between[0] == between[1]
        ):
            raise ConfigError(
                src,
                f"{path}.between",
                f"{between!r}: expected two different hosts of {list(hosts)}",
            )
        links.append(
            LinkDef(
                name=lname,
                between=(between[0], between[1]),
                uplink=parse_link_spec(item.get("uplink"), src, f"{path}.uplink", base_dir),
                downlink=parse_link_spec(item.get("downlink"), src, f"{path}.downlink", base_dir),
            )
        )
    all_names = list(hosts) + [lk.name for lk in links]
    if len(set(all_names)) != len(all_names):
        raise ConfigError(src, "links", f"host and link names must all differ: {all_names}")
    linked = {h for lk in links for h in lk.between}
    for h in hosts:
        if h not in linked:
            raise ConfigError(src, "hosts", f"host {h!r} has no link; add a link or remove it")
    parts = _components(hosts, links)
    if len(parts) > 1:
        raise ConfigError(src, "links", "the hosts are not all connected: "
                          + " | ".join(", ".join(p) for p in parts)
                          + "; add a link between these groups")  # fmt: skip
    backend = data.get("backend", "auto")
    if backend not in BACKENDS:
        raise ConfigError(src, "backend", f"{backend!r} is unknown; valid: {', '.join(BACKENDS)}")
    seed = _integer(data, "seed", src, "", None, 0)
    return TopologySpec(
        name=name,
        hosts=hosts,
        links=tuple(links),
        backend=backend,
        seed=seed,
        source=src,
        cross_traffic=parse_flows(data.get("cross_traffic"), hosts, src),
        emulator_tick_us=validate.number(
            data.get("emulator_tick_us", 0.0), src, "emulator_tick_us", 0.0, MAX_TICK_US
        ),
        containers=tuple(c for _, c, _ in entries if c is not None),
        forwarding=tuple(h for h, _, forward in entries if forward),
        sessions=parse_sessions(data.get("sessions"), hosts, src),
    )


def _components(hosts: Sequence[str], links: Sequence[LinkDef]) -> list[list[str]]:
    """The groups of hosts the links join, each in the order the hosts were given."""
    group = {h: h for h in hosts}

    def root(h: str) -> str:
        while group[h] != h:
            h = group[h]
        return h

    for lk in links:
        group[root(lk.between[0])] = root(lk.between[1])
    parts: dict[str, list[str]] = {}
    for h in hosts:
        parts.setdefault(root(h), []).append(h)
    return list(parts.values())


HOST_KEYS = ("name", "image", "command", "endpoint", "env", "forward")
IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._/:@-]*$", re.IGNORECASE)


def _argv(value: Any, src: str, where: str) -> tuple[str, ...]:
    """A command as a list of words (a string is one word per whitespace-separated part)."""
    if isinstance(value, str):
        value = value.split()
    if not isinstance(value, list) or not value or not all(isinstance(w, str) for w in value):
        raise ConfigError(src, where, f"{value!r}: expected a command as a list of words, "
                          "e.g. [iperf3, -s]")  # fmt: skip
    return tuple(value)


def _host_entry(value: Any, src: str, where: str) -> tuple[str, ContainerSpec | None, bool]:
    """A host: a name (a namespace host), or a mapping: `image:` makes it a container host,
    `forward: true` a router host (it forwards between the links it joins)."""
    if not isinstance(value, Mapping):
        return _name(value, src, where), None, False
    _check_keys(value, HOST_KEYS, src, where)
    name = _name(value.get("name"), src, f"{where}.name")
    forward = value.get("forward", False)
    if not isinstance(forward, bool):
        raise ConfigError(src, f"hosts.{name}.forward", f"{forward!r} is not true or false")
    if "image" not in value:
        extra = [k for k in value if k not in ("name", "forward")]
        if extra:
            raise ConfigError(src, f"hosts.{name}.{extra[0]}", "only a container host (with "
                              "image:) takes it; a namespace host takes name and forward")  # fmt: skip
        return name, None, forward
    image = value.get("image")
    if forward:
        raise ConfigError(src, f"hosts.{name}.forward", "a router host is a namespace host: "
                          "give it without image:")  # fmt: skip
    if not isinstance(image, str) or not IMAGE_RE.match(image):
        raise ConfigError(src, f"hosts.{name}.image", f"{image!r}: expected an image name "
                          "of the local Docker daemon, e.g. rtc-testbed/endpoint:latest (a host "
                          "without image: is a namespace host: give its name alone)")  # fmt: skip
    env = validate.mapping(value.get("env", {}), src, f"hosts.{name}.env")
    for k, v in env.items():
        if (
            not isinstance(k, str)
            or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", k)
            or isinstance(v, (dict, list))
        ):
            raise ConfigError(src, f"hosts.{name}.env.{k}", "expected NAME: value (a word)")
    return name, _container(value, name, image, env, src), forward


def _container(value: Mapping[str, Any], name: str, image: str, env: Mapping[str, Any],
               src: str) -> ContainerSpec:  # fmt: skip
    return ContainerSpec(
        host=name,
        image=image,
        command=_argv(value["command"], src, f"hosts.{name}.command")
        if value.get("command") is not None else None,
        endpoint=_argv(value["endpoint"], src, f"hosts.{name}.endpoint")
        if value.get("endpoint") is not None else None,
        env=tuple((str(k), "" if v is None else str(v)) for k, v in env.items()),
    )  # fmt: skip


# --- overrides (--set key=value) ---------------------------------------------------------


Override = tuple[str, Any]  # (dotted key, value): parsed once, applied as a value


def parse_set(item: str) -> Override:
    """'uplink.loss_pct=2' -> ('uplink.loss_pct', 2): the text after = is read as YAML (1.2
    numbers: 1e-5 is a number); a relative trace path is made absolute from the cwd."""
    key, sep, text = item.partition("=")
    if not sep or not key:
        raise ConfigError("--set", item, "expected KEY=VALUE, e.g. --set uplink.loss_pct=2")
    try:
        value = loads(text) if text else None
    except Exception:
        value = text
    if key.split(".")[-1] == "trace" and isinstance(value, str) and not Path(value).is_absolute():
        value = str(Path(value).resolve())  # relative to where the command runs
    return key.strip(), value


def apply_overrides(raw: Mapping[str, Any], overrides: Sequence[Override]) -> dict[str, Any]:
    """Apply (key, value) overrides to a raw topology mapping (returns a new mapping).

    Keys: a top-level key (`backend`, `seed`), `LINK.uplink.X`, `links.LINK.uplink.X`, or
    `uplink.X` / `downlink.X` when the topology has exactly one link. Values are used as they
    are (no text round trip): what a grid lists is what the link gets.
    """
    data: dict[str, Any] = copy.deepcopy(dict(raw))
    for key, value in overrides:
        parts = key.split(".")
        links_any = data.get("links")
        links: list[Any] = links_any if isinstance(links_any, list) else []
        names = [
            (lk.get("name") or f"link{i}") if isinstance(lk, dict) else None
            for i, lk in enumerate(links)
        ]
        if parts[0] == "links" and len(parts) > 1:
            parts = parts[1:]
        if parts[0] in ("uplink", "downlink"):
            if len(links) != 1:
                raise ConfigError(
                    "--set",
                    key,
                    f"the topology has {len(links)} links; name one: "
                    + ", ".join(f"{n}.{key}" for n in names),
                )
            target: dict[str, Any] = links[0]
        elif parts[0] in names and len(parts) > 1:
            target = links[names.index(parts[0])]
            parts = parts[1:]
        elif len(parts) == 1 and parts[0] in TOPOLOGY_KEYS and parts[0] not in ("hosts", "links"):
            data[parts[0]] = value
            continue
        else:
            valid = [
                "backend",
                "seed",
                "emulator_tick_us",
                "sessions",
                "uplink.KEY",
                "downlink.KEY",
            ] + [f"{n}.uplink.KEY" for n in names]
            raise ConfigError("--set", key, f"unknown key; valid: {', '.join(valid)}")
        for part in parts[:-1]:
            nxt = target.get(part)
            if nxt is None:
                nxt = {}
                target[part] = nxt
            if not isinstance(nxt, dict):
                raise ConfigError("--set", key, f"{part} is not a mapping")
            target = nxt
        target[parts[-1]] = value
    return data


def read_topology_file(path: str | Path) -> Mapping[str, Any]:
    """A topology file's raw mapping (not yet validated)."""
    raw = read_yaml(path)
    if not isinstance(raw, Mapping):
        raise ConfigError(
            str(path), "", "expected a mapping with keys: " + ", ".join(TOPOLOGY_KEYS)
        )
    return raw


def load_topology(path: str | Path, sets: Sequence[str] = ()) -> TopologySpec:
    """Read a topology file, apply --set KEY=VALUE overrides, validate everything."""
    data = apply_overrides(read_topology_file(path), [parse_set(s) for s in sets])
    return parse_topology(data, str(path), Path(path).resolve().parent)


def topology_from_dict(data: Mapping[str, Any], source: str) -> TopologySpec:
    """TopologySpec.to_dict() read back, validated again (traces are absolute paths)."""
    return parse_topology(data, source, Path(source).resolve().parent)


def validate_run_name(name: str) -> str:
    if not RUN_NAME_RE.match(name):
        raise ConfigError(
            "--name",
            name,
            "not a valid name; valid: 1-6 lower-case letters and digits, "
            "starting with a letter (it prefixes every interface, at most 15 characters)",
        )
    return name
