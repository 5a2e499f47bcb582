"""A scheduled direction on kernel netem (kernels that have sch_netem): a small process in the
router namespace that changes the qdisc at each segment boundary (`tc qdisc change`), against
absolute CLOCK_MONOTONIC deadlines. Started and recorded by the netem backend, ended by pid.

  python -m testbed.shaping.netem_schedule --netns NS --dev IF --spec LINKSPEC_JSON --pidfile F

Not exercised on these machines (their kernel has no sch_netem); the user-mode-linux router
runs the same changes as a guest shell loop (testbed.shaping.uml.schedule_loop).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--netns", required=True)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--pidfile", required=True)
    args = ap.parse_args(argv)
    from testbed.config import parse_link_spec
    from testbed.net.ledger import write_pidfile
    from testbed.net.nsenter import enter_netns
    from testbed.shaping.netem_params import netem_params, segment_specs

    write_pidfile(args.pidfile)
    spec = parse_link_spec(json.loads(args.spec), "--spec", "spec", Path("/"))
    assert spec.schedule is not None
    plan = [(d, netem_params(s).tc_args()) for d, s in segment_specs(spec)]
    enter_netns(args.netns)
    t = time.monotonic_ns()
    first = True
    while True:
        for duration_ms, tc in plan:
            if not first:
                subprocess.run(["tc", "qdisc", "change", "dev", args.dev, "root", "netem", *tc],
                               check=False)  # fmt: skip
            first = False
            t += round(duration_ms * 1e6)
            wait = t - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
        if spec.schedule.at_end == "hold":
            return 0


if __name__ == "__main__":
    raise SystemExit(main())
