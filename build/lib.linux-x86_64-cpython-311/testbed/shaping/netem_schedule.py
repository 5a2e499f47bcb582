"""A scheduled direction on netem: one process that changes the qdisc at each segment boundary,
against absolute CLOCK_MONOTONIC deadlines, through one long-running `tc -batch -` (no fork and
exec per change: in a user-mode-linux guest an exec costs 100-300 ms). It prints when it started
and when each change was made (`TB-SCHED-START dev real_ns`, `TB-SEG dev index real_ns`), so
how coarse the schedule lands is measured, not guessed.

  python -m testbed.shaping.netem_schedule --dev IF --spec LINKSPEC_JSON [--netns NS --pidfile F]

Runs inside the user-mode-linux router (started by its init script) and, on kernels with
sch_netem, in the router namespace (started and recorded by the netem backend; not exercised
on these machines, whose kernel has no sch_netem).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dev", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--netns", default=None)
    ap.add_argument("--pidfile", default=None)
    args = ap.parse_args(argv)
    from testbed.config import parse_link_spec
    from testbed.shaping.netem_params import netem_params, segment_specs

    if args.pidfile:
        from testbed.net.ledger import write_pidfile

        write_pidfile(args.pidfile)
    spec = parse_link_spec(json.loads(args.spec), "--spec", "spec", Path("/"))
    assert spec.schedule is not None
    plan = [(d, " ".join(netem_params(s).tc_args())) for d, s in segment_specs(spec)]
    if args.netns:
        from testbed.net.nsenter import enter_netns

        enter_netns(args.netns)
    tc_bin = shutil.which("tc") or next(p for p in ("/usr/sbin/tc", "/sbin/tc") if Path(p).exists())
    tc = subprocess.Popen([tc_bin, "-force", "-batch", "-"], stdin=subprocess.PIPE, text=True)
    assert tc.stdin is not None
    t = time.monotonic_ns()
    print(f"TB-SCHED-START {args.dev} {time.time_ns()}", flush=True)
    first = True
    while True:
        for i, (duration_ms, netem) in enumerate(plan):
            if not first:  # the qdisc was made with the first segment's parameters
                tc.stdin.write(f"qdisc change dev {args.dev} root netem {netem}\n")
                tc.stdin.flush()
                print(f"TB-SEG {args.dev} {i} {time.time_ns()}", flush=True)
            first = False
            t += round(duration_ms * 1e6)
            wait = t - time.monotonic_ns()
            if wait > 0:
                time.sleep(wait / 1e9)
        if spec.schedule.at_end == "hold":
            tc.stdin.close()
            tc.wait()
            return 0


if __name__ == "__main__":
    sys.exit(main())
