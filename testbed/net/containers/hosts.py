"""Container hosts: a topology host that is a Docker container on the emulated links.

The container runs with no network of its own (`network_mode: none`); its network namespace is
bound to /run/netns/<run>-<host> (as `ip netns attach` does), so everything built for namespace
hosts (veth ends, addresses, routes, captures, the ledger's undo) works on it unchanged. The
daemon is spoken to through the Docker SDK only.

What the testbed runs inside a container host (an endpoint, `testbed exec`) enters the
container's net, mount, UTS and IPC namespaces from the host, as `docker exec` does, but as a
process of ours: a host pid the ledger records and ends by id, with plain pipes for the JSON-line
protocol. It gets the image's environment, not the host's; it is not put in the container's
cgroup (this VM has cgroup v1; resource limits of the container do not apply to it).
"""

from __future__ import annotations

import ctypes
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.config import ContainerSpec, TopologySpec
from testbed.errors import ConfigError, KernelError, TestbedError
from testbed.net.ledger import Entry, Ledger, process_start_ticks, register_undo

if TYPE_CHECKING:
    from docker.models.containers import Container

LABEL_RUN = "rtc-testbed.run"
LABEL_HOST = "rtc-testbed.host"
SETTLE_S = 0.5  # a container that exits at start shows it within this
# the mount namespace last (the others are opened through the host's /proc)
NAMESPACES = (("net", 0x40000000), ("uts", 0x04000000), ("ipc", 0x08000000), ("mnt", 0x00020000))

_libc = ctypes.CDLL(None, use_errno=True)


class ContainerError(TestbedError):
    """A container host cannot start (no daemon, no such image, it exits): exit code 2."""

    exit_code = 2


@dataclass(frozen=True)
class ContainerHostInfo:
    """A running container host, as `exec` and the endpoints need it."""

    name: str
    image: str
    image_id: str
    docker_host: str
    pid: int  # its main process: whose namespaces are entered
    start_ticks: int
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"


def preflight(topology: TopologySpec) -> None:
    """Before anything is built: a daemon answers, and every image is there (never pulled)."""
    if not topology.containers:
        return
    from docker.errors import ImageNotFound

    from testbed.net.containers import daemon

    first = topology.containers[0].host
    c = daemon.client(f"{topology.source}: hosts.{first} (a container host)")
    for spec in topology.containers:
        try:
            c.images.get(spec.image)
        except ImageNotFound:
            raise ConfigError(topology.source, f"hosts.{spec.host}.image",
                              f"{spec.image!r} is not among the images of the Docker daemon at "
                              f"{daemon.address()} (nothing is pulled: no registry is reachable): "
                              "build it (`testbed docker image` builds rtc-testbed/endpoint) or "
                              "`docker load` it") from None  # fmt: skip


def start_host(
    ledger: Ledger, spec: ContainerSpec, name: str, mounts: Sequence[Path], source: str
) -> ContainerHostInfo:
    """Create and start the container NAME (recorded in the ledger first), check that it keeps
    running, and bind its network namespace to /run/netns/NAME (recorded too)."""
    from docker.errors import APIError, NotFound
    from pyroute2 import netns

    from testbed.net.containers import daemon
    from testbed.net.netns import prepare
    from testbed.net.nsenter import NETNS_DIR

    if os.path.exists(os.path.join(NETNS_DIR, name)):
        raise KernelError(f"network namespace {name!r} already exists; if a testbed run "
                          "crashed, run `testbed clean`; otherwise choose another --name")  # fmt: skip
    at = daemon.address()
    c = daemon.client(f"{source}: hosts.{spec.host}")
    try:
        c.containers.get(name)
    except NotFound:
        pass
    else:  # never ours to remove: the ledger would take it for the one made below
        raise ContainerError(f"{source}: hosts.{spec.host}: a container named {name} already "
                             "exists; if a testbed run crashed, `testbed clean`; otherwise "
                             "choose another --name")  # fmt: skip
    ledger.record("container", name=name, docker_host=at, run=ledger.run)
    try:
        ct = c.containers.run(
            spec.image, list(spec.command) if spec.command else None, name=name, detach=True,
            network_mode="none", hostname=spec.host, environment=dict(spec.env),
            labels={LABEL_RUN: ledger.run, LABEL_HOST: spec.host},
            volumes={str(p): {"bind": str(p), "mode": "rw"} for p in mounts},
        )  # fmt: skip
    except APIError as e:
        raise ContainerError(f"{source}: hosts.{spec.host}: the daemon refused to start its "
                             f"container: {e.explanation or e}") from None  # fmt: skip
    _check_running(ct, spec, source)
    pid = int(ct.attrs["State"]["Pid"])
    ticks = process_start_ticks(pid)
    if ticks is None:
        raise ContainerError(f"{source}: hosts.{spec.host}: its container's process is gone")
    ledger.record("netns", name=name, container=name)
    netns.attach(name, pid)
    if not os.path.exists(os.path.join(NETNS_DIR, name)):
        raise KernelError(f"could not bind the namespace of container {name} to {NETNS_DIR}")
    prepare(name)
    config = ct.attrs.get("Config") or {}
    env = dict(e.split("=", 1) for e in (config.get("Env") or []) if "=" in e)
    return ContainerHostInfo(name=name, image=spec.image, image_id=str(ct.attrs.get("Image")),
                             docker_host=at, pid=pid,
                             start_ticks=ticks, env=env,
                             workdir=config.get("WorkingDir") or "/")  # fmt: skip


def _check_running(ct: Container, spec: ContainerSpec, source: str) -> None:
    """A container that exits at start is said in one line, with the last of its output."""
    deadline = time.monotonic() + SETTLE_S
    while True:
        ct.reload()
        state = ct.attrs["State"]
        if not state.get("Running"):
            logs = ct.logs(tail=3).decode(errors="replace").strip().splitlines()
            said = f": {' | '.join(logs)}" if logs else ""
            raise ContainerError(
                f"{source}: hosts.{spec.host}: its container (image {spec.image}) exited at start "
                f"with code {state.get('ExitCode')}{said}; its command must keep running (give "
                "hosts[].command, e.g. [sleep, infinity])"
            )
        if time.monotonic() >= deadline:
            return
        time.sleep(0.1)


def undo_container(entry: Entry) -> bool:
    """The ledger's undo of a container: remove it (and its processes) by name."""
    from docker.errors import DockerException, NotFound

    from testbed.net.containers import daemon

    try:
        ct = daemon.connect(entry["docker_host"], timeout_s=30).containers.get(entry["name"])
        if (ct.labels or {}).get(LABEL_RUN) != entry.get("run", (ct.labels or {}).get(LABEL_RUN)):
            return False  # a container of that name that this run did not make
        ct.remove(force=True)
    except NotFound:
        return False
    except DockerException as e:
        raise KernelError(
            f"container {entry['name']} could not be removed: the Docker daemon at "
            f"{entry['docker_host']} did not answer ({e}); start it, then `testbed clean`"
        ) from None
    return True


def entering(info: ContainerHostInfo) -> Callable[[], None]:
    """A preexec_fn that moves the new process into the container's namespaces (single-threaded
    after fork, so the mount namespace may be joined) and its working directory."""

    def enter() -> None:
        if process_start_ticks(info.pid) != info.start_ticks:
            raise OSError(f"container {info.name} is no longer running")
        # all opened first: once in its mount namespace, /proc is the container's
        fds = [(ns, flag, os.open(f"/proc/{info.pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC))
               for ns, flag in NAMESPACES]  # fmt: skip
        try:
            for ns, flag, fd in fds:
                if _libc.setns(fd, flag) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns({ns}) into {info.name}: {os.strerror(err)}")
        finally:
            for _, _, fd in fds:
                os.close(fd)
        os.chdir(info.workdir)

    return enter


def environment(info: ContainerHostInfo, extra: Mapping[str, str]) -> dict[str, str]:
    """What a process inside gets: the image's environment, then EXTRA (TB_ADDR_*...)."""
    return {**info.env, **extra}


def endpoint_argv(spec: ContainerSpec, argv: Sequence[str], role: str) -> list[str]:
    """A stack's endpoint command as it runs inside the container: the host's `endpoint:`
    program before `ROLE --spec ... --out ...`, or the stack's own with the image's python3."""
    import sys

    tail = list(argv[list(argv).index(role) :]) if role in argv else list(argv[1:])
    if spec.endpoint is not None:
        return [*spec.endpoint, *tail]
    if argv and argv[0] == sys.executable:
        return ["python3", *argv[1:]]
    return list(argv)


def describe(info: ContainerHostInfo) -> dict[str, Any]:
    return {"container": info.name, "image": info.image, "image_id": info.image_id,
            "docker_host": info.docker_host}  # fmt: skip


register_undo("container", undo_container)  # the ledger removes containers through this
