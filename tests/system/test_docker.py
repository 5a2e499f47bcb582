"""Container hosts: real Docker containers (a daemon the tests start when none answers, the
endpoint image the testbed builds with no registry) on the emulated links. Nothing is mocked."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed.config.topology import parse_topology
from testbed.net.ledger import Ledger, state_root
from testbed.net.network import Network
from tests.system.conftest import namespaces_of, run_cli

IN_IMAGE = os.environ.get("RTC_TESTBED_IN_IMAGE") == "1"
pytestmark = [
    pytest.mark.skipif(IN_IMAGE, reason="inside the testbed's own image: no Docker in Docker"),
    pytest.mark.docker,
]
ENDPOINT = "rtc-testbed/endpoint:latest"


@pytest.fixture(scope="module")
def docker_ready() -> Iterator[None]:
    """A daemon that answers (the testbed's own, started here and stopped after, when none
    does) and a current endpoint image (built when missing or built from other sources)."""
    from testbed.net.containers import daemon, image

    started = False
    if not daemon.answers(daemon.address()):
        daemon.start()
        started = True
    try:
        if not image.current("endpoint"):
            image.build("endpoint", say=lambda line: print(line, file=sys.stderr))
        yield
    finally:
        if started:
            daemon.stop()


def containers_of(run: str) -> list[str]:
    from testbed.net.containers import daemon

    found = daemon.connect().containers.list(all=True, filters={"label": f"rtc-testbed.run={run}"})
    return [c.name for c in found]


def topology(tmp: Path, receiver: dict[str, object], **link: object) -> Path:
    spec = {"rate_mbps": 10, "delay_ms": 30, **link}
    data = {"name": "ctr", "hosts": ["sender", {"name": "receiver", **receiver}],
            "links": [{"name": "path", "between": ["sender", "receiver"], "uplink": spec,
                       "downlink": {**spec, "delay_ms": 15}}]}  # fmt: skip
    path = tmp / "ctr.yaml"
    path.write_text(json.dumps(data))
    return path


def test_container_host_ping_and_iperf3_match_the_link(
    docker_ready: None, run: str, tmp_path: Path
) -> None:
    from testbed.bench.link import iperf3_udp, ping_rtt_ms
    from testbed.shaping.backends import make_backend

    path = topology(tmp_path, {"image": ENDPOINT})
    topo = parse_topology(json.loads(path.read_text()), str(path), tmp_path)
    with Network(topo, make_backend("emu"), run=run) as net:
        assert containers_of(run) == [f"{run}-receiver"]
        inside = net.popen("receiver", ["cat", "/etc/hostname", "/etc/debian_version"],
                           in_image=True, stdout=subprocess.PIPE, text=True)  # fmt: skip
        hostname, version = inside.communicate(timeout=10)[0].split()
        assert hostname == "receiver" and version.startswith("12.")  # the image's files
        rtt = ping_rtt_ms(net, 50)
        assert rtt["min"] >= 45.0 and rtt["avg"] <= 47.0, rtt  # 30 + 15 ms and the floor
        under = iperf3_udp(net, 6, 3, in_image=True)  # the image's iperf3 server
        assert under["lost"] == 0 and 5.7 <= under["payload_mbps"] <= 6.2, under
        over = iperf3_udp(net, 20, 3, in_image=True)
        assert 9.3 <= over["ip_mbps"] <= 10.2, over  # the link's 10 Mbps of IP bytes
    assert containers_of(run) == [] and namespaces_of(run) == []


def test_up_exec_down_on_a_container_host(docker_ready: None, run: str, tmp_path: Path) -> None:
    path = topology(tmp_path, {"image": ENDPOINT, "command": ["sleep", "infinity"],
                               "env": {"GREETING": "from-the-yaml"}})  # fmt: skip
    up = run_cli("up", str(path), "--name", run)
    assert up.returncode == 0, up.stderr
    assert f"container {run}-receiver" in up.stdout
    try:
        ex = run_cli("exec", "--name", run, "receiver", "--", "sh", "-c",
                     "echo $GREETING $TB_ADDR_SENDER; which python3; ip -br addr show")  # fmt: skip
        assert ex.returncode == 0, ex.stderr
        lines = ex.stdout.splitlines()
        assert lines[0] == "from-the-yaml 10.77.0.1"
        assert lines[1] == "/opt/rtc-testbed/bin/python3"  # the image's PATH, not the host's
        assert f"{run}-0b" in ex.stdout and "10.77.1.1/24" in ex.stdout
        ping = run_cli("exec", "--name", run, "receiver", "--", "ping", "-c", "2", "-q",
                       "10.77.0.1")  # fmt: skip
        assert ping.returncode == 0 and " 0% packet loss" in ping.stdout, ping.stdout
    finally:
        down = run_cli("down", "--name", run)
    assert down.returncode == 0, down.stderr
    assert containers_of(run) == [] and namespaces_of(run) == []


def test_aiortc_session_into_a_container_host(docker_ready: None, run: str, tmp_path: Path) -> None:
    import pandas as pd

    tables = {}
    for kind, receiver in (("container", {"image": ENDPOINT}), ("namespace", {})):
        where = tmp_path / kind
        where.mkdir()
        path = topology(where, receiver) if receiver else topology(where, {})
        if not receiver:  # the same link between two namespace hosts: the reference
            data = json.loads(path.read_text())
            data["hosts"] = ["sender", "receiver"]
            path.write_text(json.dumps(data))
        res = run_cli("stream", str(path), "--bitrate-mbps", "2", "--duration-s", "5",
                      "-o", str(where / "cell"), "--name", run, timeout=180)  # fmt: skip
        assert res.returncode == 0, res.stderr
        tables[kind] = pd.read_parquet(where / "cell" / "frames.parquet")
    frames, reference = tables["container"], tables["namespace"]
    assert list(frames.columns) == list(reference.columns)
    assert (frames.dtypes == reference.dtypes).all()
    assert len(frames) >= 145 and (frames.status == "complete").all()
    assert frames.latency_ns.min() > 30e6  # the link's 30 ms one way
    gap_ms = abs(frames.latency_ns.median() - reference.latency_ns.median()) / 1e6
    assert gap_ms < 2.0, f"median latency {gap_ms:.2f} ms from the namespace hosts'"
    cell = json.loads((tmp_path / "container" / "cell" / "cell.json").read_text())
    assert cell["containers"]["receiver"]["image"] == ENDPOINT
    assert cell["where"]["receiver"] == {"hostname": "receiver",
                                         "python": "/opt/rtc-testbed/bin/python3"}  # fmt: skip
    assert cell["where"]["sender"]["python"] == sys.executable  # the namespace host's
    assert containers_of(run) == [] and namespaces_of(run) == []


@pytest.mark.parametrize("how", ["kill-9", "ctrl-c"])
def test_kill_9_then_clean_removes_the_container_and_its_links(
    docker_ready: None, run: str, tmp_path: Path, how: str
) -> None:
    path = topology(tmp_path, {"image": ENDPOINT})
    # started with SIGINT ignored, as a non-interactive shell starts a background job (CI's
    # case: the stream once ran on to exit 0 there, its Ctrl-C lost)
    proc = subprocess.Popen([sys.executable, "-m", "testbed.cli", "stream", str(path),
                             "--duration-s", "30", "-o", str(tmp_path / "cell"), "--name", run],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))  # fmt: skip
    ledger = Ledger(run)
    deadline = time.monotonic() + 60
    while ledger.phase() != "streaming" and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert ledger.phase() == "streaming", "the session did not start streaming"
    assert containers_of(run) == [f"{run}-receiver"] and namespaces_of(run)
    if how == "ctrl-c":  # the session unwinds itself: nothing for clean to do
        os.kill(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 130
        assert containers_of(run) == [] and namespaces_of(run) == []
        assert not (state_root() / run).exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ctr.yaml"]  # no partial output
        return
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert containers_of(run) == [f"{run}-receiver"]  # nothing unwound: it was kill -9
    clean = run_cli("clean")
    assert clean.returncode == 0, clean.stderr
    assert f"removed container {run}-receiver" in clean.stdout
    assert containers_of(run) == [] and namespaces_of(run) == []
    assert not (state_root() / run).exists()


@pytest.mark.parametrize(
    "receiver, expected",
    [
        ({"image": "rtc-testbed/no-such-image:1"}, "is not among the images of the Docker daemon"),
        ({"image": "rtc-testbed/debian:bookworm", "command": ["sh", "-c", "echo bad conf >&2; exit 3"]},
         "exited at start with code 3: bad conf"),
    ],
    ids=["image-missing", "exits-at-start"],
)  # fmt: skip
def test_bad_container_hosts_one_line_nothing_left(
    docker_ready: None, run: str, tmp_path: Path, receiver: dict[str, object], expected: str
) -> None:
    path = topology(tmp_path, receiver)
    res = run_cli("up", str(path), "--name", run)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "hosts.receiver" in lines[0] and expected in lines[0], res.stderr
    assert containers_of(run) == [] and namespaces_of(run) == []
    assert not (state_root() / run).exists()


def test_no_daemon_one_line_nothing_left(run: str, tmp_path: Path) -> None:
    path = topology(tmp_path, {"image": ENDPOINT})
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-daemon.sock"}
    res = subprocess.run([sys.executable, "-m", "testbed.cli", "up", str(path), "--name", run],
                         capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "hosts.receiver" in lines[0], res.stderr
    assert "no Docker daemon answers" in lines[0] and "testbed docker start" in lines[0]
    assert namespaces_of(run) == [] and not (state_root() / run).exists()


def test_own_daemon_leaves_the_hosts_forwarding_as_it_was(tmp_path: Path) -> None:
    """`testbed docker start` / `stop` of a second, private daemon: forwarding and the FORWARD
    policy unchanged (dockerd's defaults change both), its folder gone after stop."""
    from testbed.net.containers.daemon import SYSTEM_ADDRESS, answers, host_forwarding

    if answers(SYSTEM_ADDRESS):
        pytest.skip("a system Docker daemon runs here: `start` would use it as it is")
    own = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k != "DOCKER_HOST"}
    env.update(RTC_TESTBED_DOCKER_RUN=str(own), RTC_TESTBED_DOCKER_ROOT=str(tmp_path / "data"))
    before = host_forwarding()

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "testbed.cli", "docker", *args],
                              capture_output=True, text=True, env=env, timeout=90)  # fmt: skip

    started = cli("start")
    try:
        assert started.returncode == 0, started.stderr
        assert f"DOCKER_HOST=unix://{own}/docker.sock" in started.stdout
        assert "(the testbed's own)" in cli("status").stdout
        assert host_forwarding() == before
    finally:
        stopped = cli("stop")
    assert stopped.returncode == 0 and "stopped dockerd" in stopped.stdout, stopped.stderr
    assert host_forwarding() == before and not own.exists()
    with open("/proc/mounts") as f:  # dockerd binds its netns in its exec root: unmounted
        assert str(own) not in f.read()


@pytest.mark.parametrize(
    ("command", "sig", "moment"),
    [("stream", signal.SIGTERM, "setup"), ("run", signal.SIGINT, "mid")],
    ids=["stream-SIGTERM-setup", "run-SIGINT-mid"],
)
def test_interrupt_with_a_container_receiver(
    docker_ready: None, run: str, tmp_path: Path, command: str, sig: signal.Signals, moment: str
) -> None:
    """The interrupt drill's container cases (tests.system.interrupts): exit 128 + N, no
    container, namespace or partial output left, and a rerun of the sweep makes its cell."""
    from tests.system import interrupts

    outcome = interrupts.run_case(command, "container", sig, moment, tmp_path, run)
    assert outcome.killed.startswith("pid"), outcome
    assert outcome.exit_code == outcome.expected_exit(), outcome
    assert outcome.output == "absent" and outcome.left == [], outcome
    assert command == "stream" or outcome.rerun == "1 cell", outcome
