"""The userspace link emulator: one process per link direction, inside the link's namespace.

Packets routed into a TUN device are read here, judged by the pure LinkModel (loss -> queue ->
rate/trace -> delay), held until their release time, and written back into the same TUN, from
where the kernel forwards them on (the router namespace's policy routing sends only what enters
from the link's input side into the TUN).

Timing: select() with microsecond timeouts, timer slack 1 ns, SCHED_FIFO, gc frozen; it sleeps
until a margin (adapted to how late wake-ups are) before a release and then polls. Polling
stops above MAX_SPIN_PPS packets/s or past a spin budget, so the process never stays busy long
enough for the kernel's RT throttle to pause it.

The loop runs compiled (emucore / _emucore.c: bounded structures, O(1) work per packet) unless
`--loop python` asks for this file's loop, kept as the readable reference of the same steps.

Run as: python -m testbed.shaping.emu_process --netns NS --tun IF --spec JSON ...
"""

from __future__ import annotations

import argparse
import array
import ctypes
import gc
import json
import os
import resource
import select
import signal
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from testbed.shaping.emu_io import (
    COARSE_NS,
    DEFAULT_WAKE_QUANTILE,
    DRAIN_BATCH,
    MAX_BLOCK_NS,
    MAX_SPIN_PPS,
    PR_SET_TIMERSLACK,
    SPIN_BUDGET,
    SPIN_DECAY_NS,
    SPIN_MAX_NS,
    SPIN_MIN_NS,
    SPIN_PAD_NS,
    STALL_NS,
    WINDOW_NS,
    ArrivalStamps,
    open_tun,
)


def tune_timing(rt_priority: int, cpu: int | None) -> dict[str, Any]:
    """Ask for precise timers; report what was granted (recorded in the stats)."""
    granted: dict[str, Any] = {}
    libc = ctypes.CDLL(None, use_errno=True)
    granted["timer_slack_ns"] = 1 if libc.prctl(PR_SET_TIMERSLACK, 1, 0, 0, 0) == 0 else None
    if rt_priority > 0:
        try:
            os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(rt_priority))
            granted["sched"] = f"FIFO {rt_priority}"
        except OSError as e:
            granted["sched"] = f"other ({e.strerror})"
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
        granted["cpu"] = cpu
    gc.collect()
    gc.freeze()
    gc.disable()
    return granted


class Emulator:
    """The loop. Everything time-related reads CLOCK_MONOTONIC in ns."""

    def __init__(
        self,
        fd: int,
        model: Any,
        log: Any,
        start_ns: int,
        stop: list[int],
        stamps: ArrivalStamps | None = None,
    ) -> None:
        self.stamps = stamps
        self.fd = fd
        self.model = model
        self.log = log
        self.start_ns = start_ns
        self.stop = stop  # stop[0] is set by the signal handler
        self.packets_in = 0
        self.counts = {"deliver": 0, "drop_loss": 0, "drop_queue": 0, "write_error": 0,
                       "held_at_stop": 0}  # fmt: skip
        self.lateness_ns = array.array("q")

    def run(self) -> None:
        fd = self.fd
        model = self.model
        write_log = self.log.write
        mono = time.monotonic_ns
        sel = select.select
        read = os.read
        write = os.write
        start = self.start_ns
        rlist = [fd]
        pending: deque[tuple[int, int, bytes, int, int, str]] = deque()
        counts = self.counts
        lateness = self.lateness_ns
        seq = 0
        margin = SPIN_MAX_NS  # spin this long before a release; adapts to observed wake-ups
        window_start = mono()
        window_packets = 0
        window_spin = 0
        spin = True
        stop = self.stop
        stamps = self.stamps
        last_arrival = 0
        while not stop[0]:
            now = mono()
            wait = pending[0][0] - now if pending else MAX_BLOCK_NS
            ready: Any = ()
            if wait > COARSE_NS:
                # Long sleeps wake late (deep idle); sleep coarse, then again close to the target.
                ready = sel(rlist, (), (), min(wait - COARSE_NS // 2, MAX_BLOCK_NS) / 1e9)[0]
            elif wait > 0:
                if not spin:
                    ready = sel(rlist, (), (), wait / 1e9)[0]
                elif wait > margin:
                    target = now + wait - margin
                    ready = sel(rlist, (), (), (wait - margin) / 1e9)[0]
                    if not ready:
                        over = mono() - target
                        margin = max(margin - SPIN_DECAY_NS, min(over + SPIN_PAD_NS, SPIN_MAX_NS))
                        margin = max(margin, SPIN_MIN_NS)
                else:
                    t0 = now
                    ready = sel(rlist, (), (), 0)[0]  # spin: poll until the release is due
                    window_spin += mono() - t0
            if ready:
                for _ in range(DRAIN_BATCH):
                    try:
                        pkt = read(fd, 65536)
                    except BlockingIOError:
                        break
                    t = mono()
                    kernel = False
                    if stamps is not None:
                        t, kernel = stamps.stamp(pkt, t)
                    if t < last_arrival:  # the model takes packets in time order
                        t = last_arrival
                    last_arrival = t
                    size = len(pkt)
                    v = model.offer(t, size)
                    stamp = "k" if kernel else "o"
                    if v.event == "deliver":
                        pending.append((v.release_ns, seq, pkt, t, v.link_exit_ns, stamp))
                    else:
                        counts[v.event] += 1
                        write_log(f"{seq}\t{t - start}\t{size}\t{v.event}\t\t\t\t{stamp}\n")
                    seq += 1
                    window_packets += 1
            now = mono()
            while pending and pending[0][0] <= now:
                release, s, pkt, arrival, link_exit, stamp = pending.popleft()
                actual = mono()  # the release: the kernel's forwarding runs inside write()
                try:
                    write(fd, pkt)
                    event = "deliver"
                except OSError:
                    event = "write_error"
                counts[event] += 1
                lateness.append(actual - release)
                write_log(
                    f"{s}\t{arrival - start}\t{len(pkt)}\t{event}\t{link_exit - start}\t"
                    f"{release - start}\t{actual - start}\t{stamp}\n"
                )
                now = mono()
            elapsed = now - window_start
            if elapsed >= WINDOW_NS:
                # Spin only while cheap: never near the RT throttle (95% busy pauses us 50 ms).
                spin = window_packets * 1e9 / elapsed < MAX_SPIN_PPS
                window_start, window_packets, window_spin = now, 0, 0
                if stamps is not None:
                    stamps.resync()
            elif window_spin > SPIN_BUDGET * WINDOW_NS:
                spin = False
        self.packets_in = seq
        for release, s, pkt, arrival, link_exit, stamp in pending:  # read, never released
            counts["held_at_stop"] += 1
            write_log(f"{s}\t{arrival - start}\t{len(pkt)}\theld_at_stop\t{link_exit - start}\t"
                      f"{release - start}\t\t{stamp}\n")  # fmt: skip

    def stats(self, granted: dict[str, Any]) -> dict[str, Any]:
        late = sorted(self.lateness_ns)

        def q(p: float) -> float | None:
            return late[min(len(late) - 1, int(p * len(late)))] / 1000 if late else None

        usage = resource.getrusage(resource.RUSAGE_SELF)
        return {
            "packets_in": self.packets_in,
            **self.counts,
            "lateness_us": {
                "p50": q(0.5),
                "p99": q(0.99),
                "max": late[-1] / 1000 if late else None,
            },
            "stalls_over_1ms": sum(1 for x in late if x > STALL_NS),
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "duration_s": (time.monotonic_ns() - self.start_ns) / 1e9,
            "timing": granted,
            "arrival_stamps": (
                {
                    "kernel": self.stamps.matched,
                    "own_clock": self.stamps.fallbacks,
                    "socket_errors": self.stamps.socket_errors,
                }
                if self.stamps is not None
                else None
            ),
        }


def compiled_stats(
    counters: dict[str, Any], granted: dict[str, Any], start_ns: int, stamped: bool
) -> dict[str, Any]:
    """The compiled loop's counters in the stats file's shape (the python loop's, and more)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    late = {k: (v if v >= 0 else None) for k, v in counters.pop("lateness_us").items()}
    if "sojourn_us" in counters:  # a queue-discipline link's
        counters["sojourn_us"] = {
            k: (v if v >= 0 else None) for k, v in counters["sojourn_us"].items()
        }
    return {
        **counters,
        "lateness_us": late,
        "arrival_stamps": counters["arrival_stamps"] if stamped else None,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "duration_s": (time.monotonic_ns() - start_ns) / 1e9,
        "timing": granted,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--netns", required=True)
    ap.add_argument("--tun", required=True)
    ap.add_argument("--spec", required=True, help="LinkSpec as JSON")
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--stats", required=True)
    ap.add_argument("--pidfile", required=True)
    ap.add_argument("--header", default="{}", help="extra JSON for the log header")
    ap.add_argument("--ready-fd", type=int, required=True)
    ap.add_argument("--rt-priority", type=int, default=50)
    ap.add_argument("--cpu", type=int, default=None)
    ap.add_argument(
        "--no-kernel-stamps",
        dest="kernel_stamps",
        action="store_false",
        help="time arrivals by this process's own clock (when it reads the packet)",
    )
    ap.add_argument(
        "--loop",
        choices=("compiled", "python"),
        default="compiled",
        help="the compiled loop (default), or this file's reference loop",
    )
    ap.add_argument(
        "--wake-quantile",
        type=float,
        default=DEFAULT_WAKE_QUANTILE,
        help="compiled loop: wake this quantile of recent wake-up delays early and poll from "
        "there (0: never poll: least CPU, releases as late as the timer wakes us)",
    )
    ap.add_argument(
        "--release-tick-us",
        type=float,
        default=0.0,
        help="compiled loop: wake for releases at most once per this many us (0: for each "
        "release, on time). A tick trades precision (releases up to a tick late) for CPU: on a "
        "VM each wake-up has a cost of its own, and Mahimahi's whole-ms clock is a 1000 us tick",
    )
    args = ap.parse_args(argv)
    # A parent may have been holding signals while it started us: take them again.
    signal.pthread_sigmask(signal.SIG_SETMASK, set())

    from testbed.net.ledger import write_pidfile

    write_pidfile(args.pidfile)  # first: a crash of the parent cannot hide this process

    from testbed.config import parse_link_spec
    from testbed.config.traces import load_trace
    from testbed.net.nsenter import enter_netns
    from testbed.shaping import emucore
    from testbed.shaping.emu_queue import QueueEmulator
    from testbed.shaping.linklog import write_header
    from testbed.shaping.model import LinkModel
    from testbed.shaping.queue_link import QueueLinkModel

    spec = parse_link_spec(json.loads(args.spec), "--spec", "spec", Path("/"))
    trace = load_trace(spec.trace) if spec.trace else None
    enter_netns(args.netns)
    fd = open_tun(args.tun)
    stamps = ArrivalStamps(args.tun) if args.kernel_stamps else None
    stop = [0]  # the signal that stopped us (0: running)

    def on_signal(signum: int, frame: Any) -> None:
        stop[0] = signum

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    granted = tune_timing(args.rt_priority, args.cpu)
    start_mono = time.monotonic_ns()
    start_real = time.time_ns()
    queued = (
        not spec.queue.is_default
    )  # a discipline: a loop of its own (_emuqueue.c, emu_queue.py)
    compiled = args.loop == "compiled" and emucore.available()
    model: Any
    if queued and compiled:
        model = emucore.make_queue_model(spec, args.seed, start_mono, trace)
    elif queued:
        model = QueueLinkModel(spec, seed=args.seed, start_ns=start_mono, trace=trace)
    elif compiled:
        model = emucore.make_model(spec, args.seed, start_mono, trace)
    else:
        model = LinkModel(spec, seed=args.seed, start_ns=start_mono, trace=trace)
    pure = isinstance(model, LinkModel | QueueLinkModel)
    compiled_queue = queued and not pure  # a schedule keeps the pure model and emu_queue's loop
    compiled = compiled and (not queued or compiled_queue)
    granted["loop"] = ("queue " if queued else "") + ("compiled" if compiled else "python")
    granted["model"] = "pure" if pure else "compiled"
    granted["release_tick_us"] = args.release_tick_us if compiled and not queued else 0.0
    with open(args.log, "w", buffering=1 << 20) as log:
        header = json.loads(args.header)
        header.update(
            spec=spec.to_dict(),
            seed=args.seed,
            start_mono_ns=start_mono,
            start_real_ns=start_real,
            tun=args.tun,
            netns=args.netns,
            timing=granted,
        )
        write_header(log, header, queue=queued)
        emulator: Emulator | QueueEmulator
        if queued:
            emulator = QueueEmulator(fd, model, log, start_mono, stop, stamps)  # (python loop)
        else:
            emulator = Emulator(fd, model, log, start_mono, stop, stamps)
        try:
            os.write(args.ready_fd, f"ready {start_mono} {start_real}\n".encode())
            os.close(args.ready_fd)
        except OSError:
            return 1  # the parent is gone before we were ready: nobody will use this link
        if compiled:
            log.flush()  # the header; the compiled loop writes its lines to the same fd
            stamp_fd = stamps.sock.fileno() if stamps is not None else -1
            io = emucore.LoopIo(fd, stamp_fd, model, log.fileno(), start_mono, stop)
            lookahead = emucore.lookahead_ns(spec)
            if compiled_queue:
                counters = emucore.run_queue_loop(io, lookahead)
            else:
                tick = round(args.release_tick_us * 1000)
                counters = emucore.run_loop(io, args.wake_quantile, lookahead, tick)
            stats = compiled_stats(counters, granted, start_mono, stamps is not None)
        else:
            emulator.run()
            stats = emulator.stats(granted)
        if queued:
            stats["queue"] = spec.queue.to_dict()
    Path(args.stats).write_text(json.dumps(stats, indent=1) + "\n")
    return 128 + stop[0] if stop[0] else 0  # the shell's convention: who asked us to stop shows


if __name__ == "__main__":
    sys.exit(main())
