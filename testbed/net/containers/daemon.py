"""The Docker daemon the testbed talks to (through the Docker SDK), and the one it can start.

Which daemon: DOCKER_HOST when it is set; else the testbed's own (`testbed docker start`) while
it runs; else the system's (/var/run/docker.sock). A daemon the user runs is used as it is. The
testbed starts one only when asked, with its own data root, no bridge, no iptables rules and no
IP forwarding, and checks afterwards that the host's forwarding and FORWARD policy are as they
were (dockerd's defaults turn forwarding on and set that policy to DROP): any change is undone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.errors import UnavailableError
from testbed.files import write_atomic
from testbed.net.ledger import end_process, process_start_ticks, session_members

if TYPE_CHECKING:
    from docker import DockerClient

OWN_DIR = Path(os.environ.get("RTC_TESTBED_DOCKER_RUN", "/run/rtc-testbed-docker"))
DATA_ROOT = Path(os.environ.get("RTC_TESTBED_DOCKER_ROOT", "/var/lib/rtc-testbed/docker"))
SYSTEM_ADDRESS = "unix:///var/run/docker.sock"
START_TIMEOUT_S = 20.0
FORWARD_SYSCTL = Path("/proc/sys/net/ipv4/ip_forward")


def own_address() -> str:
    return f"unix://{OWN_DIR / 'docker.sock'}"


def _owner_path() -> Path:
    return OWN_DIR / "owner.json"


def own_daemon() -> dict[str, Any] | None:
    """The testbed's own dockerd while it runs: {pid, start_ticks, host_before, ...}."""
    try:
        owner: dict[str, Any] = json.loads(_owner_path().read_text())
    except (OSError, ValueError):
        return None
    if process_start_ticks(int(owner["pid"])) != int(owner["start_ticks"]):
        return None
    return owner


def address() -> str:
    """The daemon's address, by the rule in the module's docstring."""
    if os.environ.get("DOCKER_HOST"):
        return os.environ["DOCKER_HOST"]
    return own_address() if own_daemon() is not None else SYSTEM_ADDRESS


def answers(at: str) -> bool:
    try:
        connect(at, timeout_s=3).ping()
    except Exception:
        return False
    return True


def connect(at: str | None = None, timeout_s: float = 60) -> DockerClient:
    """A client of the daemon at AT (default: address()); no request is made yet."""
    import docker

    return docker.DockerClient(base_url=at or address(), timeout=int(timeout_s))


def client(who: str) -> DockerClient:
    """A client of a daemon that answers; otherwise one line naming WHO needs it and what to do."""
    at = address()
    try:
        c = connect(at)
        c.ping()
    except Exception:
        raise UnavailableError(
            f"{who}: no Docker daemon answers at {at}: start one with `testbed docker start` "
            "(or `make dockerd`), or point DOCKER_HOST at yours"
        ) from None
    return c


# --- the host's forwarding state, which dockerd's defaults change -------------------------------


def _forward_policy() -> str | None:
    """The iptables FORWARD chain's policy (None: no iptables here)."""
    if shutil.which("iptables") is None:
        return None
    out = subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True)
    for line in out.stdout.splitlines():
        if line.startswith("-P FORWARD "):
            return line.split()[2]
    return None


def host_forwarding() -> dict[str, Any]:
    return {"ip_forward": FORWARD_SYSCTL.read_text().strip(), "forward_policy": _forward_policy()}


def restore_forwarding(before: dict[str, Any], say: Callable[[str], None]) -> None:
    """Put the host's ip_forward and FORWARD policy back as BEFORE says, saying what changed."""
    now = host_forwarding()
    if now["ip_forward"] != before["ip_forward"]:
        FORWARD_SYSCTL.write_text(str(before["ip_forward"]))
        say(f"restored net.ipv4.ip_forward={before['ip_forward']} (dockerd had set it)")
    if before["forward_policy"] and now["forward_policy"] != before["forward_policy"]:
        subprocess.run(["iptables", "-P", "FORWARD", before["forward_policy"]], check=True)
        say(f"restored the FORWARD policy {before['forward_policy']} (dockerd had changed it)")


# --- the testbed's own daemon -----------------------------------------------------------------


def start(say: Callable[[str], None] = lambda _: None) -> str:
    """Start the testbed's own dockerd, unless a daemon already answers; returns its address."""
    at = address()
    if answers(at):
        say(f"a Docker daemon answers at {at}: used as it is")
        return at
    if shutil.which("dockerd") is None:
        raise UnavailableError(
            "dockerd is not installed: `apt-get install docker.io` (`make setup` installs it)"
        )
    before = host_forwarding()
    OWN_DIR.mkdir(parents=True, exist_ok=True)
    DATA_ROOT.mkdir(parents=True, exist_ok=True)
    log = open(OWN_DIR / "dockerd.log", "ab")  # noqa: SIM115 (the daemon's, kept open by it)
    argv = ["dockerd", "--data-root", str(DATA_ROOT), "--exec-root", str(OWN_DIR / "exec"),
            "--host", own_address(), "--pidfile", str(OWN_DIR / "dockerd.pid"),
            "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-forward=false",
            "--ip-masq=false", "--storage-driver", "overlay2"]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip
    log.close()
    owner = {"pid": proc.pid, "start_ticks": process_start_ticks(proc.pid), "host_before": before,
             "data_root": str(DATA_ROOT), "argv": argv}  # fmt: skip
    write_atomic(_owner_path(), json.dumps(owner, indent=1))
    deadline = time.monotonic() + START_TIMEOUT_S
    while not answers(own_address()):
        if proc.poll() is not None or time.monotonic() > deadline:
            tail = (OWN_DIR / "dockerd.log").read_text(errors="replace").strip().splitlines()[-2:]
            stop()
            raise UnavailableError(f"dockerd did not start ({' | '.join(tail)}); its log: "
                                   f"{OWN_DIR / 'dockerd.log'}")  # fmt: skip
        time.sleep(0.2)
    restore_forwarding(before, say)
    say(f"started dockerd (pid {proc.pid}) at {own_address()}, data root {DATA_ROOT}")
    return own_address()


def stop(say: Callable[[str], None] = lambda _: None) -> bool:
    """End the testbed's own dockerd (and the containerd it started), by pid; restore the
    host's forwarding as it was before. False: it was not running."""
    try:
        owner = json.loads(_owner_path().read_text())
    except (OSError, ValueError):
        return False
    pid, ticks = int(owner["pid"]), int(owner["start_ticks"])
    ran = process_start_ticks(pid) == ticks
    if ran:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        end_process(pid, ticks, grace_s=20.0)  # dockerd stops its containers first
    for member, member_ticks in session_members(pid, ticks):  # its containerd and shims
        end_process(member, member_ticks, grace_s=3.0)
    restore_forwarding(owner["host_before"], say)
    unmount_under(OWN_DIR)  # dockerd binds its netns in its exec root (exec/netns/default)
    shutil.rmtree(OWN_DIR, ignore_errors=True)
    if ran:
        say(f"stopped dockerd (pid {pid}); its images stay in {owner['data_root']}")
    else:
        say("removed what a dockerd that had died left behind")
    return True


def unmount_under(path: Path) -> None:
    """Every mount below PATH, deepest first (lazily: nothing there is in use any more)."""
    with open("/proc/mounts") as f:
        points = [line.split()[1] for line in f]
    for point in sorted((p for p in points if p.startswith(str(path) + "/")), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True)


def stale() -> bool:
    """The testbed's own dockerd died without `testbed docker stop` (what `clean` tidies)."""
    return _owner_path().exists() and own_daemon() is None


def describe() -> str:
    """One line for `testbed docker status` and `testbed doctor`."""
    at = address()
    if not answers(at):
        return f"no Docker daemon answers at {at} (`testbed docker start` starts one)"
    info = connect(at).info()
    own = " (the testbed's own)" if at == own_address() else ""
    return (f"Docker {info.get('ServerVersion')} at {at}{own}: {info.get('Images')} images, "
            f"{info.get('Containers')} containers, storage {info.get('Driver')}")  # fmt: skip
