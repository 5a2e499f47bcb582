"""One WebRTC session over a topology: up, capture, stream, collect, down, write the cell.

The cell folder (one cell of a sweep later):
  frames.parquet, frames.csv   the per-frame table (testbed.rtc.framelog.COLUMNS)
  audio.parquet                the audio packets, with audio on (testbed.rtc.audiolog.COLUMNS)
  controller.parquet           a controller's decisions, the stack's answers, the feedback
                               (the sender record's controller table; t_s from the first frame)
  timeseries.csv               per second: target vs achieved bitrate, latency, losses
  cell.json                    resolved topology + stream config, environment, summary, and
                               the fidelity record (testbed.rtc.fidelity: was it undisturbed?)
  stream.json                  the stream spec the endpoints were given (and re-validated)
  sender.pcap, receiver.pcap   wire captures (kernel ns timestamps; open them in Wireshark)
  link-*.log, link-*.stats.json  the emulator's per-packet link logs
  sender/, receiver/           the endpoint records (testbed.rtc.record: identity, not timing)

The session knows a stack only through testbed.rtc.stack (how to start an endpoint) and the
endpoint records; the wire captures time everything.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from testbed.config import LinkSpec, TopologySpec
from testbed.config.traffic import check_malformed_targets
from testbed.errors import TestbedError
from testbed.files import parquet_bytes, write_atomic, write_json_atomic
from testbed.net import names
from testbed.net.containers import hosts as containers
from testbed.net.network import Network, NetworkInfo
from testbed.net.shaper import Backend
from testbed.net.traffic import CrossTraffic
from testbed.procstat import exit_words
from testbed.roi.quality import add_roi_columns
from testbed.rtc.audiolog import audio_table, summarize_audio
from testbed.rtc.capture import Capture, read_pcap, to_frame
from testbed.rtc.endpointproc import Endpoint
from testbed.rtc.fidelity import HostSampler, fidelity_record
from testbed.rtc.framelog import after_warmup, frame_table
from testbed.rtc.mediapath import (
    media_flow,
    media_hops,
    media_path,
    media_ports,
    stray_datagrams,
)
from testbed.rtc.record import EndpointRecord
from testbed.rtc.sharing import multi_cell as _multi_cell
from testbed.rtc.sharing import sharing_series
from testbed.rtc.spec import StreamSpec, session_streams
from testbed.rtc.stack import get_stack
from testbed.rtc.timeseries import cell_series
from testbed.rtc.wireid import (
    PayloadTypes,
    audio_payload_types,
    payload_padding,
    payload_types,
    receiver_feedback,
    sender_packets,
)
from testbed.rtc.wirelog import wire_table
from testbed.versions import package_versions
from testbed.viewer.judging import intake_table, judge_cell

Say = Callable[[str], None]


@dataclass
class StreamResult:
    out: Path
    frames: pd.DataFrame
    summary: dict[str, Any]


def _environment(backend: str) -> dict[str, Any]:
    return {
        "kernel": platform.release(), "python": platform.python_version(),
        "machine": platform.machine(), "cpus": os.cpu_count(), "link_backend": backend,
        "versions": package_versions(),
    }  # fmt: skip


def first_sent_ns(frames: pd.DataFrame) -> int:
    """The session's time zero for tables drawn against it: its first frame on the wire."""
    sent = frames.sent_first_ns.dropna()
    return int(sent.min()) if len(sent) else 0


def summarize(frames: pd.DataFrame, spec: StreamSpec) -> dict[str, Any]:
    """Short numbers for the terminal and cell.json; warm-up frames excluded."""
    f = after_warmup(frames, spec.warmup_s)
    sent = f[f.status != "not_sent"]
    done = sent[sent.status == "complete"]
    lat = done.latency_ns.astype("float64").to_numpy() / 1e6
    span = (sent.sent_first_ns.max() - sent.sent_first_ns.min()) / 1e9 if len(sent) > 1 else 0
    achieved = float(sent.size_bytes.sum() * 8 / span / 1e6) if span else float("nan")

    waits = sent.latency_dropaware_ns.dropna().astype("float64").to_numpy() / 1e6

    def q(p: float, values: np.ndarray = lat) -> float | None:
        return float(np.percentile(values, p)) if len(values) else None

    return {
        "frames": len(sent), "complete": len(done), "lost": int((sent.status == "lost").sum()),
        "achieved_mbps": achieved, "latency_ms": {"p50": q(50), "p95": q(95), "p99": q(99)},
        "latency_dropaware_ms": {"p50": q(50, waits), "p95": q(95, waits), "p99": q(99, waits)},
        "retransmissions": int(sent.retransmissions.sum()),
        "packets_lost_first_try": int(sent.packets_lost_first_try.sum()),
    }  # fmt: skip


class Session:
    """One media session of a cell: its endpoints, its two captures, its folder.

    name None: the cell's only session, writing into the cell's folder as always; a named one
    (topology `sessions:`) writes into sessions/<name>/ of the cell. The phases run in order:
    start_captures, start (the endpoints), connect, wait_done, then close, and after the
    network is down, collect (its tables from the wire)."""

    def __init__(self, topology: TopologySpec, spec: StreamSpec, out: Path, run: str,
                 name: str | None = None, start_s: float = 0.0) -> None:  # fmt: skip
        self.topology, self.spec, self.out, self.name, self.start_s = (
            topology,
            spec,
            out,
            name,
            start_s,
        )
        for host in (spec.sender, spec.receiver):
            if host not in topology.hosts:
                role = "sender" if host == spec.sender else "receiver"
                raise TestbedError(f"stream.{role}: {host!r} is not a host of the topology "
                                   f"({', '.join(topology.hosts)})")  # fmt: skip
        self.hops = media_hops(topology, spec)
        first, last = topology.links[self.hops[0][0]], topology.links[self.hops[-1][0]]
        self.capture_at = {  # each end's interface on the link it sends or receives the media by
            spec.sender: names.ifname(run, self.hops[0][0],
                                      "a" if first.between[0] == spec.sender else "b"),
            spec.receiver: names.ifname(run, self.hops[-1][0],
                                        "a" if last.between[0] == spec.receiver else "b"),
        }  # fmt: skip
        self.on_path = [topology.links[i] for i, _ in self.hops]
        self.stacks = {
            role: get_stack(spec.stack_of(role), "stream") for role in ("sender", "receiver")
        }
        self.spec_path = out / "stream.json"
        self.caps: dict[str, Capture] = {}
        self.endpoints: list[Endpoint] = []
        self.ports: tuple[int, int] | None = None
        self.connect_s = float("nan")
        self.connected_mono = 0.0
        self.answer_sdp = ""
        self.started_s = 0.0  # when its endpoints were started, from the first's connection
        self.capture_stats: dict[str, str] = {}

    @property
    def label(self) -> str:
        return f"session {self.name}" if self.name else "the session"

    def prepare(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.spec_path, self.spec.to_dict())

    def start_captures(self, net: Network) -> None:
        spec = self.spec
        self.caps = {role: Capture(net, host, self.capture_at[host], self.out / f"{role}.pcap")
                     for role, host in (("sender", spec.sender), ("receiver", spec.receiver))}  # fmt: skip

    def start(self, net: Network, watch: Callable[[], None]) -> None:
        """The endpoints, receiver first (owned by pid in the ledger under this session)."""
        spec, owns = self.spec, (f"{self.name}-" if self.name else "")
        for role, host in (("receiver", spec.receiver), ("sender", spec.sender)):
            argv = self.stacks[role].endpoint_argv(role, self.spec_path, self.out)
            ep = Endpoint(net, role, host, argv, self.out, owns=owns + role)
            ep.watch = watch
            self.endpoints.append(ep)

    def connect(self, net: Network) -> None:
        receiver, sender = self.endpoints
        timeout = self.spec.connect_timeout_s
        offer = sender.expect("offer", timeout)
        receiver.send({"type": "offer", "sdp": offer["sdp"]})
        answer = receiver.expect("answer", timeout)
        sender.send({"type": "answer", "sdp": answer["sdp"]})
        connected = sender.expect("connected", timeout)
        receiver.expect("connected", timeout)
        self.connected_mono = time.monotonic()
        self.connect_s = (connected["t_ns"] - offer["t_ns"]) / 1e9
        self.answer_sdp = str(answer["sdp"])
        self.ports = media_ports(offer["sdp"], answer["sdp"], net.address(self.spec.sender),
                                 net.address(self.spec.receiver))  # fmt: skip

    def wait_done(self) -> None:
        spec = self.spec
        left = spec.duration_s + spec.drain_s + 30 - (time.monotonic() - self.connected_mono)
        self.endpoints[1].expect("done", max(left, 5.0))

    def stop_endpoints(self) -> None:
        for ep in self.endpoints:
            ep.send({"type": "stop"})

    def close(self, finished: bool) -> None:
        for ep in self.endpoints:  # after an error or Ctrl-C, do not wait for them
            ep.close(timeout_s=15 if finished else 0)

    def flight_ms(self) -> float:
        """The longest a packet of this session can still be on its path (either way)."""
        return max(sum(_longest_flight_ms(getattr(lk, d)) for lk in self.on_path)
                   for d in ("uplink", "downlink"))  # fmt: skip

    def stop_captures(self) -> None:
        self.capture_stats = {role: cap.stop() for role, cap in self.caps.items()}

    def ended_early(self) -> str | None:
        return next((c.ended_early for c in self.caps.values() if c.ended_early), None)

    def collect(
        self, info: NetworkInfo, offset: int, say: Say
    ) -> tuple[pd.DataFrame, dict[str, Any], dict[str, Any]]:
        """After the network is down: the frame table from the wire, the summary, and what
        this session adds to cell.json."""
        spec, out, ports = self.spec, self.out, self.ports
        for ep in self.endpoints:
            if ep.proc.returncode != 0:
                raise TestbedError(f"{self.label}: {ep.role} endpoint (pid {ep.proc.pid}) "
                                   f"{exit_words(ep.proc.returncode)}{ep._tail()}")  # fmt: skip
        sender_ip, receiver_ip = info.hosts[spec.sender].address, info.hosts[spec.receiver].address
        complete_from_wire(out, sender_ip, receiver_ip, offset, ports)
        snd = EndpointRecord.read(out, "sender")
        rcv = EndpointRecord.read(out, "receiver")
        sent_wire = to_frame(read_pcap(out / "sender.pcap"), offset)
        recv_wire = to_frame(read_pcap(out / "receiver.pcap"), offset)
        strays = {"sender": stray_datagrams(sent_wire, sender_ip, ports, 0),
                  "receiver": stray_datagrams(recv_wire, receiver_ip, ports, 1)}  # fmt: skip
        back = media_flow(recv_wire, receiver_ip, sender_ip, ports[::-1] if ports else None)
        sent_wire = media_flow(sent_wire, sender_ip, receiver_ip, ports)
        recv_wire = media_flow(recv_wire, sender_ip, receiver_ip, ports)
        wire = wire_table(sent_wire, recv_wire, back, payload_types(self.answer_sdp))
        write_atomic(out / "wire.parquet", parquet_bytes(wire))  # RFC 8868's per-packet log
        frames = frame_table(snd, rcv, sent_wire, recv_wire, int(spec.giveup_ms * 1e6),
                             sizes_from_wire=spec.source == "video")  # fmt: skip
        if spec.source == "roi":
            frames = add_roi_columns(frames, snd["roi_frames"], rcv["quality"])
        summary = summarize(frames, spec)
        if spec.audio_spec().enabled:
            audio = audio_table(sent_wire, recv_wire, audio_payload_types(self.answer_sdp))
            if audio.empty:
                raise TestbedError(f"{self.label}: audio was asked for but no audio packet "
                                   "crossed the sender's wire; see sender.pcap")  # fmt: skip
            write_atomic(out / "audio.parquet", parquet_bytes(audio))
            summary["audio"] = summarize_audio(audio, spec.warmup_s)
        viewer = spec.viewer_spec()
        if viewer.enabled:
            write_atomic(out / "intake.parquet", parquet_bytes(intake_table(rcv["intake"], frames)))
        write_atomic(out / "frames.parquet", parquet_bytes(frames))
        write_atomic(out / "frames.csv", frames.to_csv(index=False))
        if spec.abr != "fixed":  # decisions, the stack's answers, the feedback they followed
            control = snd["controller"].assign(t_s=lambda c: (c.t_ns - first_sent_ns(frames)) / 1e9)
            write_atomic(out / "controller.parquet", parquet_bytes(control))
        fields = {
            "path": media_path(self.topology, spec), "stream": spec.to_dict(),
            "stack": {"sender": snd.stack, "receiver": rcv.stack, "label": spec.stack_label()},
            "encrypted": snd.info.get("encrypted"),
            "from_wire": {"sender_packets": snd.info.get("packets_from") == "wire",
                          "receiver_feedback": rcv.info.get("feedback_from") == "wire"},
            "rtcp_received_by_sender": snd.info.get("rtcp_received"),
            "plis_sent": rcv.info.get("plis", 0),
            "cpu": {"sender": snd.info.get("cpu"), "receiver": rcv.info.get("cpu")},
            "where": {"sender": snd.info.get("where"), "receiver": rcv.info.get("where")},
            "abr": snd.info.get("abr"), "fec_nacks_saved": rcv.info.get("fec_nacks_saved", 0),
            "keyframe_requests": snd.info.get("keyframe_requests", 0),
            "connect_s": self.connect_s, "stopped": snd.info.get("stopped"),
            "started_s": round(self.started_s, 3),
            "media_ports": {"sender": ports[0], "receiver": ports[1]} if ports else None,
            "stray_datagrams": strays,
            "browser": {"sender": snd.info.get("browser"), "receiver": rcv.info.get("browser")},
            "capture": self.capture_stats,
            "pcap_bytes": {r: (out / f"{r}.pcap").stat().st_size for r in ("sender", "receiver")},
        }  # fmt: skip
        return frames, summary, fields


def run_stream(
    topology: TopologySpec,
    spec: StreamSpec,
    out: Path,
    backend: Backend,
    backend_reason: str,
    run: str = "tb",
    seed: int | None = None,
    say: Say = lambda _: None,
) -> StreamResult:
    """The cell: one session (spec), or the topology's `sessions:` each over spec."""
    out.mkdir(parents=True, exist_ok=True)
    sessions = make_sessions(topology, spec, out, run)
    for sess in sessions:
        check_malformed_targets(topology.cross_traffic, (sess.spec.sender, sess.spec.receiver),
                                topology.source)  # fmt: skip
        sess.prepare()
    mounts = sorted({m for sess in sessions for m in _mounts(sess.out, sess.spec)})
    net = Network(topology, backend, run=run, backend_reason=backend_reason,
                  log_dir=out / "links", seed=seed, mounts=mounts)  # fmt: skip
    started = time.time_ns()
    first = sessions[0]
    with net:
        info = net.info
        assert info is not None
        offset = time.time_ns() - time.monotonic_ns()
        cross: CrossTraffic | None = None
        cross_info: dict[str, Any] = {}
        finished = False
        sampler: HostSampler | None = None
        host: dict[str, Any] = {}
        try:
            net.ledger.note_phase("setup")
            for sess in sessions:
                sess.start_captures(net)
            for sess in sessions:
                for cap in sess.caps.values():
                    cap.wait_ready()
            net.ledger.note_phase("connecting")
            first.start(net, lambda: _check_link(net, started))
            first.connect(net)
            if topology.cross_traffic:
                cross = CrossTraffic(net, topology.cross_traffic, out)
                cross.start(spec.duration_s, {first.spec.sender: first.ports[0],
                                              first.spec.receiver: first.ports[1]}
                            if first.ports else None)  # fmt: skip
            say(f"connected in {first.connect_s:.2f} s; streaming {first.spec.duration_s:g} s")
            net.ledger.note_phase("streaming")
            sampler = HostSampler().start()
            for sess in sessions[1:]:  # in the order of their start times
                wait = first.connected_mono + sess.start_s - time.monotonic()
                while wait > 0:
                    _check_link(net, started)
                    time.sleep(min(wait, 0.5))
                    wait = first.connected_mono + sess.start_s - time.monotonic()
                sess.started_s = time.monotonic() - first.connected_mono  # as told: start_s
                sess.start(net, lambda: _check_link(net, started))
                sess.connect(net)
                say(f"session {sess.name} connected at {sess.start_s:g} s "
                    f"({sess.connect_s:.2f} s); streaming {sess.spec.duration_s:g} s")  # fmt: skip
            for sess in sorted(sessions, key=lambda x: x.start_s + x.spec.duration_s):
                sess.wait_done()
            net.ledger.note_phase("teardown")
            host = sampler.stop()
            _check_link(net, started)
            if cross is not None:
                cross_info = cross.stop()
            for sess in sessions:
                sess.stop_endpoints()
            finished = True
        except LinkFailed:
            raise
        except Exception as e:
            _check_link(net, started, cause=e)  # a dead link explains what the endpoints saw
            failed = next((x for x in sessions if x.endpoints and x is not first), None)
            if len(sessions) > 1 and failed is not None and not isinstance(e, LinkFailed):
                raise TestbedError(f"{failed.label} failed: {e}") from e
            raise
        finally:
            if sampler is not None and not host:  # an error: its thread ends with the cell
                sampler.stop()
            if cross is not None and not cross_info:  # an error: end the flows at once
                cross.stop(timeout_s=0)
            for sess in sessions:
                sess.close(finished)
            # what the endpoints sent while closing is still on the link: let it arrive
            time.sleep(max(sess.flight_ms() for sess in sessions) / 1000 + 0.2)
            for sess in sessions:
                sess.stop_captures()
        if finished:  # a link process or a capture that died after the stream still cost data
            _check_link(net, started)
            for sess in sessions:
                if early := sess.ended_early():
                    raise TestbedError(f"{early} before the session ended: its wire record is "
                                       "incomplete; nothing of this session is kept")  # fmt: skip
    collected = [(sess, *sess.collect(info, offset, say)) for sess in sessions]
    common = {
        "topology": {"source": topology.source, "hosts": list(topology.hosts),
                     "links": {lk.name: {"between": list(lk.between), "uplink": lk.uplink.to_dict(),
                                         "downlink": lk.downlink.to_dict()} for lk in topology.links}},
        "containers": {h: containers.describe(c) for h, i in info.hosts.items()
                       if (c := i.container) is not None},
        "seed": info.seed, "backend": info.backend,
        "backend_reason": info.backend_reason, "environment": _environment(info.backend),
        "cross_traffic": cross_info, "clock_offset_real_minus_mono_ns": offset,
        "started_real_ns": started, "ended_real_ns": time.time_ns(),
    }  # fmt: skip
    _, frames, summary, fields = collected[0]
    cell = {**common, **fields, "summary": summary}
    if first.name is not None:  # several sessions: each its own, and how they shared
        frames = pd.concat([f.assign(session=sess.name) for sess, f, _, _ in collected],
                           ignore_index=True)  # fmt: skip
        cell = _multi_cell(common, collected, frames)
        summary = cell["summary"]
        write_atomic(out / "frames.parquet", parquet_bytes(frames))
        write_atomic(out / "frames.csv", frames.to_csv(index=False))
    for p in (out / "links").glob("*"):
        if p.suffix in (".log", ".json"):
            shutil.copy(p, out / p.name)
    shutil.rmtree(out / "links", ignore_errors=True)
    captures = {(f"{sess.name}/" if sess.name else "") + role: said
                for sess in sessions for role, said in sess.capture_stats.items()}  # fmt: skip
    cpus = {(f"{sess.name}/" if sess.name else "") + role: cpu
            for sess, _, _, f in collected for role, cpu in (f.get("cpu") or {}).items()}  # fmt: skip
    cell["fidelity"] = fidelity_record(out, frames, captures, cpus, host)
    write_json_atomic(out / "cell.json", cell)
    viewer = first.spec.viewer_spec()
    if first.name is None and viewer.enabled and viewer.judge_after:  # after the session
        say(f"judging the viewer's frames ({viewer.judge})")
        cell["viewer"] = judge_cell(out)
        write_json_atomic(out / "cell.json", cell)
    if first.name is None:
        write_atomic(out / "timeseries.csv", cell_series(out).to_csv(index=False))
    else:
        write_atomic(out / "timeseries.csv", sharing_series(frames, cell).to_csv(index=False))
    return StreamResult(out, frames, summary)


def make_sessions(topology: TopologySpec, spec: StreamSpec, out: Path, run: str) -> list[Session]:
    """The cell's sessions (rtc.spec.session_streams): one writing into the cell's folder, or
    each named one into sessions/<name>/."""
    return [Session(topology, one, out if name is None else out / "sessions" / name, run, name, start)
            for name, start, one in session_streams(topology, spec)]  # fmt: skip


def _mounts(out: Path, spec: StreamSpec) -> list[Path]:
    """What a container host must see at the same path: the session's folder (its spec, where
    its endpoint writes) and a video file's folder."""
    found = [out.resolve()]
    if spec.video and Path(spec.video).is_file():
        found.append(Path(spec.video).resolve().parent)
    return found


LINK_DEATH_GRACE_S = 2.0  # after an error, how long a dying link process may take to show it


class LinkFailed(TestbedError):
    """A link process died under a session."""


def _check_link(net: Network, started_real_ns: int, cause: Exception | None = None) -> None:
    """Fail the session in words if a link process died under it (a SIGKILLed emulator, a
    crashed router): which, how, and when it was noticed."""
    dead = net.died()
    deadline = time.monotonic() + (LINK_DEATH_GRACE_S if cause is not None else 0)
    while not dead and time.monotonic() < deadline:  # a router shutting down takes a moment
        time.sleep(0.1)
        dead = net.died()
    if dead:
        after = (time.time_ns() - started_real_ns) / 1e9
        raise LinkFailed(f"the emulated link failed: {'; '.join(dead)} (noticed {after:.1f} s "
                           "into the session); nothing of this session is kept") from cause  # fmt: skip


def complete_from_wire(
    out: Path, sender_ip: str, receiver_ip: str, offset: int, ports: tuple[int, int] | None = None
) -> None:
    """Fill the record tables a stack could not log itself (its info says `packets_from:
    wire` / `feedback_from: wire`) from the cell's captures, once, before the cell is whole."""
    back = (ports[1], ports[0]) if ports else None  # the feedback direction's ports
    snd_info = json.loads((out / "sender" / "info.json").read_text())["info"]
    if snd_info.get("packets_from") == "wire":
        pts = PayloadTypes.from_dict(snd_info["payload_types"])
        packets = sender_packets(out / "sender.pcap", sender_ip, receiver_ip, pts, offset,
                                 bool(snd_info.get("encrypted")), ports)  # fmt: skip
        if not snd_info.get("encrypted"):  # NACKs readable: tell probes from retransmissions
            asked = receiver_feedback(out / "sender.pcap", receiver_ip, sender_ip, offset, back)
            packets = payload_padding(packets, asked)
        write_atomic(out / "sender" / "packets.parquet", parquet_bytes(packets))
    rcv_info = json.loads((out / "receiver" / "info.json").read_text())["info"]
    if rcv_info.get("feedback_from") == "wire":
        feedback = receiver_feedback(out / "receiver.pcap", receiver_ip, sender_ip, offset, back)
        write_atomic(out / "receiver" / "feedback.parquet", parquet_bytes(feedback))


def _longest_flight_ms(spec: LinkSpec) -> float:
    """The longest a packet can still be on the link: its (scheduled) delay plus jitter."""
    segments = spec.schedule.segments if spec.schedule is not None else [spec]
    return max(s.delay_ms + 4 * s.jitter_ms for s in segments)
