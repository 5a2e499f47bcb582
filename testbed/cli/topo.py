"""Commands for a topology left up: up, exec, down, clean, doctor."""

from __future__ import annotations

import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from testbed.cli.common import echo_prefixed, fail, name_option, require_root
from testbed.errors import ConfigError, TestbedError, interrupt_exit_code


@click.command()
@click.argument("topology", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--backend", default=None, help="link backend: auto | emu | netem [topology's, or auto]"
)
@click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="override a topology value, e.g. --set uplink.loss_pct=2 (repeatable)",
)
@click.option(
    "--log-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where the per-packet link logs go [state dir/logs]",
)
@click.option("--seed", type=int, default=None, help="seed of the loss and jitter models")
@name_option()
def up(
    topology: Path,
    backend: str | None,
    sets: tuple[str, ...],
    log_dir: Path | None,
    seed: int | None,
    name: str,
) -> None:
    """Build TOPOLOGY and leave it up (tear it down with `testbed down`)."""
    from testbed.config import load_topology, validate_run_name
    from testbed.net.network import Network, describe_spec
    from testbed.shaping.backends import resolve_backend

    try:
        validate_run_name(name)
        topo = load_topology(topology, sets)
        chosen = resolve_backend(backend or topo.backend, name)
        require_root()
        net = Network(topo, chosen.backend, run=name, backend_reason=chosen.reason,
                      log_dir=log_dir, seed=seed)  # fmt: skip
        info = net.start(detached=True)
    except TestbedError as e:
        fail(e)
    except KeyboardInterrupt as e:
        click.echo("testbed: interrupted; everything created was removed", err=True)
        sys.exit(interrupt_exit_code(e))
    click.echo(
        f"topology {topo.name} is up as {name!r} (backend {chosen.name}: {chosen.reason}; "
        f"seed {info.seed})"
    )
    if chosen.name == "emu":
        from testbed.shaping.ceiling import links_over_ceiling

        for line in links_over_ceiling(topo):
            click.echo(f"note: {line}", err=True)
    for host, h in info.hosts.items():
        where = f"container {h.container.name} ({h.container.image})" if h.container else ""
        click.echo(f"  {host:<12} {h.address:<12} netns {h.netns} {where}".rstrip())
    for lname, link in info.links.items():
        for direction in ("uplink", "downlink"):
            click.echo(f"  {lname}.{direction}: {describe_spec(link[direction]['spec'])}")
    if topo.forwarding:  # a routed topology: which links each pair of end hosts crosses
        from testbed.net.routes import endpoint_paths

        for line in endpoint_paths(topo):
            click.echo(f"  path {line}")
    click.echo(f"link logs: {info.log_dir}")
    click.echo(
        f"run commands with: testbed exec --name {name} HOST -- CMD...;  stop: testbed down --name {name}"
    )


@click.command(name="exec", context_settings={"ignore_unknown_options": True})
@click.argument("host")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@name_option()
def exec_(host: str, command: tuple[str, ...], name: str) -> None:
    """Run COMMAND inside HOST, with TB_ADDR_<HOST> set for every host."""
    from testbed.net.network import load_state
    from testbed.net.nsenter import enter_netns

    try:
        info = load_state(name)
    except TestbedError as e:
        fail(e)
    if host not in info.hosts:
        fail(ConfigError("exec", host, f"unknown host; valid: {', '.join(info.hosts)}"))
    env = dict(os.environ)
    env.update(info.env())
    inside = info.hosts[host].container
    try:
        if inside is None:
            enter_netns(info.hosts[host].netns)
        else:  # a container host: its files and its image's environment, as `docker exec`
            from testbed.net.containers.hosts import entering, environment

            env = environment(inside, info.env())
            entering(inside)()
    except OSError as e:
        fail(TestbedError(f"cannot enter {host} ({e.strerror}): is {name!r} still up? "
                           "`testbed clean` removes a crashed topology"))  # fmt: skip
    try:
        os.execvpe(command[0], list(command), env)
    except FileNotFoundError:
        fail(TestbedError(f"{command[0]}: command not found inside {host}"))


def _aqm(st: dict[str, Any]) -> str:
    """A queue discipline's own drops, CE marks and sojourn, when the link has one."""
    if "drop_aqm" not in st:
        return ""
    soj = st.get("sojourn_us") or {}
    p95 = f", sojourn p95 {soj['p95'] / 1000:.1f} ms" if soj.get("p95") is not None else ""
    return f", {st['drop_aqm']} AQM drops, {st.get('ecn_marked', 0)} CE marks{p95}"


def _print_stats(info: Any) -> None:
    """One line per emulated direction, from the stats each emulator wrote when it stopped."""
    for lname, link in info.links.items():
        for direction in ("uplink", "downlink"):
            tag = f"{lname}.{direction}"
            if link[direction].get("backend") != "emu":
                continue  # kernel netem keeps its own counters (tc -s qdisc), not ours
            path = link[direction].get("stats")
            try:
                st = json.loads(Path(path).read_text()) if path else None
            except (OSError, ValueError):
                st = None
            if st is None:
                click.echo(f"  {tag}: no statistics: its emulator did not stop cleanly (killed?)")
                continue
            late = st["lateness_us"]
            lat = (
                f"release lateness p50 {late['p50']:.0f} us p99 {late['p99']:.0f} us"
                if late["p50"] is not None
                else "no packets"
            )
            click.echo(
                f"  {tag}: {st['packets_in']} in, {st['deliver']} delivered, "
                f"{st['drop_loss']} lost, {st['drop_queue']} queue drops{_aqm(st)}; {lat}; "
                f"{st['stalls_over_1ms']} releases >1 ms late; cpu {st['cpu_s']:.2f} s"
            )


@click.command()
@name_option()
def down(name: str) -> None:
    """Tear down the topology NAME (processes first, then namespaces). Keeps its logs."""
    from testbed.net.network import Network

    require_root()
    try:
        result = Network.take_down(name)
    except TestbedError as e:
        fail(e)
    if result is None:
        click.echo(f"nothing is up as {name!r}")
        return
    removed, info = result
    click.echo(f"{name!r} is down ({removed} objects removed)")
    if info is not None:
        _print_stats(info)
        click.echo(f"link logs kept in {info.log_dir}")


@click.command()
@name_option(None, "clean only this run [every run the testbed recorded whose owner is gone]")
@click.option("--force", is_flag=True, help="with --name: remove that run even if it is live")
def clean(name: str | None, force: bool) -> None:
    """Remove what crashed runs left (everything they recorded, nothing else); live runs are
    listed and kept (`--name RUN --force` removes one anyway)."""
    from testbed.errors import BusyError, LedgerError
    from testbed.net.containers import hosts  # noqa: F401 (registers the ledger's undo of containers)
    from testbed.net.ledger import Ledger, all_runs, state_root

    if force and name is None:
        fail(ConfigError("--force", "", "needs --name RUN: live runs are removed one by one"))
    require_root()
    runs = [name] if name else all_runs()
    if name is None and state_root().is_dir():
        runs = sorted(set(runs) | {p.name for p in state_root().iterdir() if p.is_dir()})
    total, kept, broken = 0, 0, 0
    for run in runs:
        ledger = Ledger(run)
        live = ledger.live()
        if live and not force:
            click.echo(f"kept {run}: live, {live}; `testbed clean --name {run} --force` removes it")
            kept += 1
            continue
        try:
            total += ledger.remove_all(say=functools.partial(echo_prefixed, f"  {run}: "))
        except BusyError as e:
            click.echo(f"skipped {run}: {e}", err=True)
        except (LedgerError, TestbedError) as e:  # unreadable, or a daemon that must answer
            click.echo(f"testbed: error: {e}", err=True)
            broken += 1
    from testbed.net.containers import daemon

    if daemon.stale():  # the testbed's own dockerd died without `testbed docker stop`
        daemon.stop(say=functools.partial(echo_prefixed, "  dockerd: "))
    from testbed.experiment.worker import remove_dead_work

    work = remove_dead_work()  # cells of sweep workers that were killed, not yet sent back
    if work:
        click.echo(f"removed the unfinished cells of {work} sweep worker(s) that are gone")
    click.echo(f"clean: {total} objects removed from {len(runs) - kept - broken} run(s)"
               + (f"; {kept} live run(s) kept" if kept else ""))  # fmt: skip
    if broken:
        raise SystemExit(1)


@click.command()
@name_option()
def doctor(name: str) -> None:
    """Report what the kernel offers and which link backend `auto` uses, and why."""
    from testbed.shaping.backends import choose_backend
    from testbed.shaping.capabilities import probe_kernel, timer_lateness_us

    require_root()
    try:
        caps = probe_kernel(name)
    except TestbedError as e:
        fail(e)
    click.echo(f"kernel {os.uname().release}, {os.cpu_count()} CPUs")
    for cap in caps:
        click.echo(f"  {'yes' if cap.ok else 'no ':<4} {cap.name:<12} {cap.detail}")
    p50, p99 = timer_lateness_us()
    click.echo(f"  timers: select() 1 ms sleeps wake late by p50 {p50:.0f} us, p99 {p99:.0f} us")
    from testbed.shaping.uml import uml_why_not

    why_not = uml_why_not()
    uml = "no  " if why_not else "yes "
    click.echo(f"  {uml} user-mode-linux  " + (why_not or "/usr/bin/linux.uml boots a guest: "
               "kernel netem as a process (--backend netem on this kernel)"))  # fmt: skip
    from testbed.shaping import emucore
    from testbed.shaping.ceiling import ceiling_words

    loop = "compiled" if emucore.available() else f"python ({emucore.WHY_NOT})"
    click.echo(f"  emulator loop: {loop}; {ceiling_words()}")
    from testbed.net.containers import daemon

    click.echo(f"  container hosts: {daemon.describe()}")
    chosen, why = choose_backend("auto", name)
    click.echo(f"backend auto -> {chosen} ({why})")
