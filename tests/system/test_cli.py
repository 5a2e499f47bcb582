"""The CLI as a user runs it: up / exec / down, doctor, and bad input (exit 2, nothing made)."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.shaping.uml import uml_available, uml_why_not
from tests.conftest import ROOT
from tests.system.conftest import namespaces_of, run_cli

P2P = str(ROOT / "topologies" / "p2p.yaml")
TRACE = ROOT / "topologies" / "traces" / "const-5.trace"


def test_up_exec_down(run: str) -> None:
    up = run_cli(
        "up", P2P, "--name", run, "--set", "uplink.delay_ms=2", "--set", "downlink.delay_ms=2"
    )
    assert up.returncode == 0, up.stderr
    assert "backend emu" in up.stdout and "10.77.0.1" in up.stdout and "10.77.1.1" in up.stdout
    assert len(namespaces_of(run)) == 3
    again = run_cli("up", P2P, "--name", run)
    assert again.returncode == 2 and "already up" in again.stderr
    ex = run_cli(
        "exec", "--name", run, "sender", "--", "sh", "-c", "ping -c 2 -i 0.05 -n $TB_ADDR_RECEIVER"
    )
    assert ex.returncode == 0, ex.stderr
    assert "2 received" in ex.stdout
    bad_host = run_cli("exec", "--name", run, "nobody", "--", "true")
    assert bad_host.returncode == 2 and "valid: sender, receiver" in bad_host.stderr
    down = run_cli("down", "--name", run)
    assert down.returncode == 0, down.stderr
    assert "path.uplink" in down.stdout and "delivered" in down.stdout
    assert namespaces_of(run) == []
    assert "nothing is up" in run_cli("down", "--name", run).stdout


def _topology(tmp_path: Path, text: str) -> str:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    return str(p)


GOOD = """hosts: [sender, receiver]
links:
  - name: path
    between: [sender, receiver]
    uplink: {rate_mbps: 10, delay_ms: 30, %s}
"""


@pytest.mark.parametrize(
    ("extra", "sets", "message"),
    [
        ("colour: blue", [], "links.path.uplink.colour: unknown key; valid keys: rate_mbps"),
        ("loss_pct: 150", [], "links.path.uplink.loss_pct: 150 is out of range; valid: [0, 100]"),
        ("loss_pct: 1", ["uplink.rate_mbps=-3"], "links.path.uplink.rate_mbps: -3 is out of range"),
        (
            "loss_pct: 1",
            ["uplink.delay_ms=abc"],
            "links.path.uplink.delay_ms: 'abc' is not a number",
        ),
        (
            "loss_pct: 1",
            ["uplink.rate_mbps=null", "uplink.trace=/no/such.trace"],
            "trace file not found",
        ),
        ("loss_pct: 1", ["--backend", "warp"], "'warp' is unknown; valid: auto, emu, netem"),
        pytest.param(
            "loss_pct: 1",
            ["--backend", "netem", "uplink.rate_mbps=null", f"uplink.trace={TRACE}"],
            "netem has no time-varying rate",
            marks=pytest.mark.skipif(not uml_available(), reason=str(uml_why_not())),
        ),
        ("loss_pct: 1", ["--name", "Bad_Name"], "--name: Bad_Name: not a valid name"),
    ],
)
def test_bad_input_exits_2_and_creates_nothing(
    tmp_path: Path, run: str, extra: str, sets: list[str], message: str
) -> None:
    path = _topology(tmp_path, GOOD % extra)
    args = ["up", path, "--name", run]
    for s in sets:
        args += [s] if s.startswith("--") or "=" not in s else ["--set", s]
    res = run_cli(*args)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], res.stderr
    assert namespaces_of(run) == []


def test_malformed_yaml_exits_2(tmp_path: Path, run: str) -> None:
    res = run_cli("up", _topology(tmp_path, "hosts: [a\n"), "--name", run)
    assert res.returncode == 2 and "bad.yaml: line" in res.stderr and "malformed YAML" in res.stderr


def test_malformed_trace_exits_2(tmp_path: Path, run: str) -> None:
    (tmp_path / "x.trace").write_text("3\n1\n")
    res = run_cli(
        "up",
        _topology(tmp_path, GOOD % "loss_pct: 0"),
        "--name",
        run,
        "--set",
        "uplink.rate_mbps=null",
        "--set",
        f"uplink.trace={tmp_path / 'x.trace'}",
    )
    assert res.returncode == 2
    assert "x.trace: line 2: 1 comes after 3" in res.stderr


def test_doctor_reports_kernel_and_backend(run: str) -> None:
    res = run_cli("doctor", "--name", run)
    assert res.returncode == 0, res.stderr
    assert "qdisc netem" in res.stdout and "TUN" in res.stdout
    assert "backend auto -> emu" in res.stdout
    assert namespaces_of(run) == [] and namespaces_of(f"{run}-") == []


def test_bench_load_refuses_an_unknown_loop_before_anything(run: str) -> None:
    res = run_cli("bench", "link", "--load", "--loops", "compiled,warp", "--name", run)
    assert res.returncode == 2
    assert (
        res.stderr.strip() == "testbed: error: --loops: warp: valid: compiled, python, tickN (N us)"
    )
    assert namespaces_of(run) == []


def test_bench_sweep_and_worker_refuse_bad_numbers_before_anything(run: str) -> None:
    res = run_cli("bench", "sweep", "--cells", "0", "--name", run)
    assert res.returncode == 2
    assert res.stderr.strip() == "testbed: error: --cells: 0: valid: a whole number >= 1"
    res = run_cli("worker", "tcp://127.0.0.1:1", "--cores-per-cell", "0")
    assert res.returncode == 2 and "--cores-per-cell: 0: valid: a whole number >= 1" in res.stderr


def test_doctor_and_up_say_the_measured_ceiling(tmp_path: Path, run: str) -> None:
    import json
    import os
    import platform
    import subprocess
    import sys

    saved = tmp_path / "rtc-testbed" / "bench-load.json"
    saved.parent.mkdir()
    saved.write_text(json.dumps({"max_rate_mbps": {"compiled": 300}, "host": platform.node()}))
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "testbed.cli", *args], capture_output=True,
                              text=True, timeout=120, env=env)  # fmt: skip

    res = cli("doctor", "--name", run)
    assert "emulator loop: compiled" in res.stdout, res.stdout
    assert "compiled loop 300 Mbps" in res.stdout and "this host" in res.stdout
    res = cli("up", P2P, "--name", run, "--set", "uplink.rate_mbps=500")
    try:
        assert res.returncode == 0, res.stderr
        assert "link path uplink: 500 Mbps is above the 300 Mbps" in res.stderr
        assert "downlink" not in res.stderr  # its rate is under the ceiling
    finally:
        cli("down", "--name", run)


def test_bench_load_smoke_prints_the_floor_and_saves_the_ceiling(tmp_path: Path, run: str) -> None:
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    res = subprocess.run(
        [sys.executable, "-m", "testbed.cli", "bench", "link", "--load", "--quick",
         "--load-rates", "20", "--loops", "compiled", "--name", run],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "platform: one timer sleep-and-wake costs" in res.stdout
    assert (
        "[compiled] 20 Mbps: probe" in res.stdout and "received by the receiver host" in res.stdout
    )
    assert "[compiled] overload: 20 Mbps offered 40" in res.stdout and "(cleanly)" in res.stdout
    saved = json.loads((tmp_path / "rtc-testbed" / "bench-load.json").read_text())
    row = saved["rates"][0]
    assert row["emulator"]["deliver"] == row["receiver"]["ip_in_receives"]  # every packet
    assert saved["overload"][0]["delivered_mbps"] > 0.85 * 20
    assert namespaces_of(run) == []


def test_a_dry_run_validates_and_plans_and_starts_nothing(tmp_path: Path, run: str) -> None:
    out = tmp_path / "res"
    res = run_cli("run", str(ROOT / "experiments" / "quick.yaml"), "--dry-run", "-o", str(out),
                  "--name", run)  # fmt: skip
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("quick: 8 configuration(s)") and len(lines) == 10
    assert "8 cell(s) to run, 72 s of streaming" in lines[-1] and "nothing was started" in lines[-1]
    assert not out.exists() and namespaces_of(run) == []
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        f"topology: {ROOT / 'topologies' / 'p2p.yaml'}\ngrid: {{uplink.loss_pct: [1, 150]}}\n"
    )
    res = run_cli("run", str(bad), "--dry-run", "--name", run)
    assert (
        res.returncode == 2
        and "uplink.loss_pct" in res.stderr
        and len(res.stderr.splitlines()) == 1
    )
