"""The fidelity record's rules (pure) and the host sampler (real /proc)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from testbed.errors import ConfigError
from testbed.rtc.fidelity import HostSampler, capture_drops, flags


def test_a_quiet_cell_is_not_flagged_and_each_disturbance_is_said() -> None:
    quiet = {"emulator": {"path-uplink": {"lateness_p99_us": 120.0, "late_over_1ms": 0, "released": 900}},
             "host": {"cpus": 2, "steal_pct": 0.1, "runqueue_mean": 1.2}, "captures": {"sender": 0}}  # fmt: skip
    assert flags(quiet) == []
    late = {**quiet, "emulator": {"path-uplink": {"lateness_p99_us": 2500.0, "late_over_1ms": 40,
                                                  "released": 900}}}  # fmt: skip
    said = flags(late)
    assert len(said) == 2 and "p99 2500 us" in said[0] and "40 of 900 releases" in said[1]
    busy = {
        **quiet,
        "host": {"cpus": 2, "steal_pct": 9.0, "runqueue_mean": 3.5},
        "captures": {"receiver": 3},
    }
    assert [s.split(":")[0] for s in flags(busy)] == ["host", "host", "capture receiver"]


def test_a_few_late_releases_on_a_quiet_direction_are_not_a_flag() -> None:
    rtcp_only = {"emulator": {"path-downlink": {"lateness_p99_us": 80.0, "late_over_1ms": 2,
                                                "released": 371}}}  # fmt: skip
    assert flags(rtcp_only) == []  # 0.54%, but two releases say nothing
    busier = {"emulator": {"path-downlink": {"lateness_p99_us": 80.0, "late_over_1ms": 12,
                                             "released": 371}}}  # fmt: skip
    assert "12 of 371" in flags(busier)[0]


def test_capture_drops_from_tcpdumps_words() -> None:
    said = "898 packets captured\n900 packets received by filter\n2 packets dropped by kernel"
    assert capture_drops(said) == 2 and capture_drops("") == 0


def test_the_sampler_sees_a_busy_host() -> None:
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])  # always runnable
    try:
        sampler = HostSampler(period_s=0.05).start()
        time.sleep(0.5)
        host = sampler.stop()
    finally:
        spin.kill()
        spin.wait()
    assert host["runqueue_max"] >= 1 and len(sampler.samples) >= 5
    assert 0 <= host["steal_pct"] <= 100 and host["cpus"] >= 1


def test_cells_divide_the_hosts_cores() -> None:
    import os

    from testbed.experiment.runner import RunOptions, pin_cells
    from testbed.experiment.worker import cell_cores

    cores = sorted(os.sched_getaffinity(0))
    assert cell_cores(0, 0) is None and cell_cores(0, len(cores) + 1) is None
    shares = [cell_cores(n, len(cores)) for n in range(len(cores))]
    assert [sorted(s or ()) for s in shares] == [[c] for c in cores]  # one core each, disjoint
    opts = RunOptions(len(cores), "tb", ("emu", "test"))
    assert pin_cells(opts) == (len(cores) if len(cores) > 1 else 0)
    assert pin_cells(RunOptions(1, "tb", ("emu", "test"))) == 0  # one at a time: no need
    with pytest.raises(ConfigError, match="--jobs"):
        pin_cells(RunOptions(len(cores) + 1, "tb", ("emu", "test"), pin=True))


def test_the_default_jobs_follow_what_was_measured() -> None:
    import os

    from testbed.experiment.runner import default_jobs, light
    from testbed.experiment.spec import load_experiment
    from tests.conftest import ROOT

    cores = len(os.sched_getaffinity(0))
    fig3 = load_experiment(ROOT / "experiments" / "fig3.yaml")  # one aiortc session, synthetic
    assert light(fig3) and default_jobs(fig3) == cores
    one = fig3.only({"stream.bitrate_mbps": 1, "uplink.loss_pct": 0})
    assert len(one.configs) == 1 and default_jobs(one) == min(cores, one.repetitions)
    browsers = load_experiment(ROOT / "experiments" / "fig3-chromium.yaml")
    assert not light(browsers) and default_jobs(browsers) == max(1, cores // 2)
    several = load_experiment(ROOT / "experiments" / "rmcat" / "5.4.yaml").only(
        {"stream.abr": "remb"}
    )
    assert len(several.configs) == 1 and not light(several)  # sessions: not measured so
