"""The Chromium sender and receiver processes. Each runs inside its host's namespace:

  python -m testbed.rtc.chromium.endpoint sender|receiver --spec SPEC.json --out CELL

It starts one headless Chromium (testbed.rtc.chromium.browser) on the package's page, drives it
over the DevTools pipe, relays offer/answer with the orchestrator (JSON lines, as every stack's
endpoint does; signalling never crosses the emulated link), and on `stop` writes its endpoint
record (testbed.rtc.record). Chromium cannot log every packet it sends, so the record says
`packets_from: wire` and the session fills the sender's packets (and, unencrypted, the
receiver's feedback) from the wire captures (testbed.rtc.wireid).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from testbed.net.ledger import OWNED_FILE_ENV
from testbed.rtc import record
from testbed.rtc.chromium.browser import Browser
from testbed.rtc.chromium.cdp import Cdp
from testbed.rtc.chromium.control import BrowserControl
from testbed.rtc.chromium.stack import ABR, encrypted, field_trials
from testbed.rtc.signaling import Inbox, emit, endpoint_args
from testbed.rtc.spec import StreamSpec
from testbed.rtc.wireid import payload_types

U32 = 1 << 32
CLIP_MAX_S = 10.0  # a video source is written as a y4m clip that the fake camera loops
SYNTHETIC_ENCODER_SHARE = 1.0  # synthetic: the encoder aims at this share of the pinned rate
# so that frames fit the exact size they are padded to


def _real_minus_mono() -> int:
    return time.time_ns() - time.monotonic_ns()


def _to_mono(t_ms: float, offset: int) -> int:
    return int(t_ms * 1e6) - offset


def write_y4m(spec: StreamSpec, path: Path) -> None:
    """The video source as a y4m clip for Chromium's fake camera (which loops it)."""
    from testbed.roi.scene import FrameSource, yuv_frame

    source = FrameSource(spec.video, spec.width, spec.height)
    frames = max(1, int(min(spec.duration_s + spec.drain_s, CLIP_MAX_S) * spec.fps))
    fps = f"{round(spec.fps * 1000)}:1000"
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{spec.width} H{spec.height} F{fps} Ip A1:1 C420jpeg\n".encode())
        for i in range(frames):
            f.write(b"FRAME\n")
            f.write(yuv_frame(source.rgb(i)).to_ndarray().tobytes())


def browser_flags(spec: StreamSpec, role: str, profile: Path) -> list[str]:
    flags = [f"--use-fake-device-for-media-stream=fps={spec.fps:g}"]
    if role == "sender" and spec.source == "video" and spec.video is not None:
        clip = profile.parent / f"{profile.name}-clip.y4m"  # removed with the profile
        write_y4m(spec, clip)
        flags.append(f"--use-file-for-fake-video-capture={clip}")
    if not encrypted(spec):
        flags.append("--disable-webrtc-encryption")
    trials = field_trials(spec)
    if trials:
        flags.append(f"--force-fieldtrials={trials}")
    return flags


def page_config(spec: StreamSpec) -> dict[str, Any]:
    bps = spec.bitrate_mbps * 1e6
    frame_bytes = int(bps / 8 / spec.fps)
    if spec.abr == "fixed":
        encoder_max = bps * (SYNTHETIC_ENCODER_SHARE if spec.source == "synthetic" else 1.0)
    elif spec.abr == "gcc":  # GCC below a fixed ceiling (cap_mbps, or its older name max_mbps)
        params = spec.abr_params
        encoder_max = float(params.get("cap_mbps", params.get("max_mbps", 50.0))) * 1e6
    else:  # a registry controller: its starting point, until its first decision
        encoder_max = bps
    return {
        "codec": spec.codec, "fps": spec.fps, "width": spec.width, "height": spec.height,
        "bitrateBps": bps, "abr": spec.abr, "encoderMaxBps": int(encoder_max),
        "synthetic": spec.source == "synthetic", "frameBytes": frame_bytes,
        "keyframeBytes": int(frame_bytes * spec.keyframe_ratio),
        "fec": spec.fec["scheme"], "nack": True, "audio": _audio_config(spec),
        "sendFps": spec.send_fps,
    }  # fmt: skip


def _audio_config(spec: StreamSpec) -> dict[str, Any] | None:
    audio = spec.audio_spec()
    if not audio.enabled:
        return None
    return {"bitrateBps": int(audio.bitrate_bps), "ptimeMs": audio.ptime_ms}


def sender_frames(raw: list[list[Any]], fps: float, offset: int, target: Any,
                  paused: Any = lambda t_ns: False) -> list[Any]:  # fmt: skip
    """The sender's frames in record form. frame_id counts source frames by RTP timestamp, so a
    frame the encoder dropped (a gap of 2+ frame intervals) is a row that never went out; a gap
    inside a pause (paused(t_ns)) is no frame at all."""
    ticks = 90_000 / fps
    rows: list[Any] = []
    prev_ts = prev_t = None
    frame_id = -1
    for ts, t_ms, size, _encoded, key in raw:
        t_ns = _to_mono(t_ms, offset)
        step = 1 if prev_ts is None else max(1, round(((ts - prev_ts) % U32) / ticks))
        for j in range(1, step):  # dropped by the encoder
            assert prev_ts is not None and prev_t is not None
            gap_t = prev_t + (t_ns - prev_t) * j // step
            if paused(gap_t):
                continue
            rows.append((frame_id + j, gap_t, int(prev_ts + j * ticks) % U32, 0, False,
                         target(gap_t)))  # fmt: skip
        frame_id += step
        rows.append((frame_id, t_ns, int(ts), int(size), bool(key), target(t_ns)))
        prev_ts, prev_t = ts, t_ns
    return rows


def rate_rows(raw: list[dict[str, Any]], offset: int) -> list[Any]:
    rows = []
    prev: dict[str, Any] | None = None
    for r in raw:
        sent = None
        if prev is not None and r.get("bytes") is not None and prev.get("bytes") is not None:
            dt = (r["t"] - prev["t"]) / 1000
            sent = (r["bytes"] + r.get("headerBytes", 0) - prev["bytes"]
                    - prev.get("headerBytes", 0)) * 8 / dt if dt > 0 else None  # fmt: skip
        rtt = r.get("rtt")
        rows.append((_to_mono(r["t"], offset), r.get("target"), r.get("available"), sent,
                     int(r.get("encoded") or 0), None if rtt is None else rtt * 1000))  # fmt: skip
        prev = r
    return rows


class Endpoint:
    def __init__(self, role: str, spec: StreamSpec, out: Path) -> None:
        self.role, self.spec, self.out = role, spec, out
        owned = os.environ.get(OWNED_FILE_ENV)
        base = Path(owned).parent if owned else Path(tempfile.mkdtemp(prefix="tb-chromium-"))
        # one profile (and fake-camera clip) per endpoint: the owned file's name is this
        # endpoint's own (owned-sender; owned-<session>-sender when a cell runs several)
        mine = Path(owned).stem.removeprefix("owned-") if owned else role
        self.profile = base / f"chromium-{mine}"
        self.browser = Browser(self.profile, browser_flags(spec, role, self.profile))
        self.cdp: Cdp | None = None
        self.session = ""
        self.times: dict[str, Any] = {}
        self.offset = _real_minus_mono()
        self.streaming_from = (time.monotonic(), 0.0)  # (wall, browser CPU s) once connected
        self.streaming_ns = 0  # when the sender's media began (pauses count from it)
        self.control = (BrowserControl(spec, self.js) if role == "sender" and spec.abr not in ABR
                        else None)  # a registry controller: decisions from this process  # fmt: skip

    async def js(self, expression: str, timeout_s: float = 30.0) -> Any:
        assert self.cdp is not None
        return await self.cdp.evaluate(self.session, expression, timeout_s)

    async def start(self) -> None:
        t0 = time.monotonic()
        self.cdp = await self.browser.start()
        self.session = await self.cdp.page_session()
        self.times["devtools_s"] = time.monotonic() - t0
        for _ in range(200):
            if await self.js("typeof window.tb === 'object' && document.readyState === 'complete'"):
                break
            await asyncio.sleep(0.025)
        else:
            raise RuntimeError("the endpoint page did not load")
        self.times["page_loaded_s"] = time.monotonic() - t0

    async def connected(self) -> None:
        """Wait for ICE, polled from here (short calls: a page that stops answering is said
        as such), then start the page's per-second sampling."""
        timeout_s = max(1.0, self.spec.connect_timeout_s - 3.0)  # its error comes first
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while not await self.js("tb.up()", 3):
            if loop.time() > deadline:
                state = await self.js("tb.state()", 3)
                raise RuntimeError(f"not connected after {timeout_s:g} s ({state})")
            await asyncio.sleep(0.02)
        await self.js("tb.started()", 5)
        self.browser.sample_cpu()
        self.streaming_from = (time.monotonic(), self.browser.cpu_s())

    async def sample_cpu(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.browser.sample_cpu()
            await asyncio.sleep(1.0)

    async def stream_with_pauses(self) -> None:
        """duration_s of media from the connection, none inside the spec's pauses."""
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for a, b in self.spec.pauses:
            await asyncio.sleep(max(0.0, t0 + a - loop.time()))
            await self.js("tb.pause()")
            await asyncio.sleep(max(0.0, t0 + b - loop.time()))
            await self.js("tb.resume()")
        await asyncio.sleep(max(0.0, t0 + self.spec.duration_s - loop.time()))

    def paused(self, t_ns: int) -> bool:
        start = self.streaming_ns
        return any(start + a * 1e9 <= t_ns < start + b * 1e9 for a, b in self.spec.pauses)

    async def run(self, inbox: Inbox) -> None:
        await self.start()
        stop = asyncio.Event()
        sampler = asyncio.ensure_future(self.sample_cpu(stop))
        cfg = json.dumps(page_config(self.spec))
        if self.role == "sender":
            offer = await self.js(f"tb.sender({cfg})")
            emit({"type": "offer", "sdp": offer})
            answer = (await inbox.expect("answer"))["sdp"]
            self.sdp = await self.js(f"tb.answer({json.dumps(answer)})")
            await self.connected()
            emit({"type": "connected"})
            self.streaming_ns = time.monotonic_ns()
            steering = asyncio.Event()
            loop = asyncio.ensure_future(self.control.run(steering)) if self.control else None
            try:
                await self.stream_with_pauses()
            finally:
                steering.set()
                if loop is not None:
                    await loop
            await self.js("tb.stopSending()")
            await asyncio.sleep(self.spec.drain_s)
            emit({"type": "done"})
        else:
            offer = (await inbox.expect("offer"))["sdp"]
            self.sdp = await self.js(f"tb.receiver({cfg}, {json.dumps(offer)})")
            emit({"type": "answer", "sdp": self.sdp})
            await self.connected()
            emit({"type": "connected"})
        await inbox.expect("stop")
        got = await self.js("tb.collect()")
        stop.set()
        await sampler
        self.browser.sample_cpu()
        self.write(got)

    def write(self, got: dict[str, Any]) -> None:
        stats = got["stats"]
        rtp: dict[str, Any] = next((s for s in stats.values() if s["type"] in ("outbound-rtp", "inbound-rtp")
                    and s.get("kind") == "video"), {})  # fmt: skip
        voice: dict[str, Any] = next((s for s in stats.values() if s["type"] in ("outbound-rtp", "inbound-rtp")
                      and s.get("kind") == "audio"), {})  # fmt: skip
        t0, cpu0 = self.streaming_from
        info: dict[str, Any] = {
            "cpu": {"cpu_s": self.browser.cpu_s(), "wall_s": (time.monotonic_ns()
                    - self.browser.started_ns) / 1e9, "processes": self.browser.processes(),
                    "streaming_cpu_s": self.browser.cpu_s() - cpu0,
                    "streaming_wall_s": time.monotonic() - t0},
            "encrypted": encrypted(self.spec), "browser": self.times, "page_errors": got["errors"],
            "payload_types": payload_types(self.sdp).to_dict(), "rtp_stats": rtp,
            "audio_rtp_stats": voice,
        }  # fmt: skip
        if self.role == "sender":
            rates = rate_rows(got["rates"], self.offset)
            fixed = self.spec.bitrate_mbps * 1e6

            def target(t_ns: int) -> float:
                if self.spec.abr == "fixed":
                    return fixed
                before = [r[1] for r in rates if r[0] <= t_ns and r[1] is not None]
                return float(before[-1]) if before else fixed

            info.update(packets_from="wire", rtcp_received=None,
                        keyframe_requests=int(rtp.get("pliCount", 0) + rtp.get("firCount", 0)),
                        abr=self.control.summary() if self.control else
                        {"controller": self.spec.abr, "params": self.spec.abr_params,
                         "final_target_bps": rates[-1][1] if rates else None},
                        padded_frames=sum(1 for f in got["frames"] if f[2] != f[3]))  # fmt: skip
            tables = {
                "frames": record.table("sender", "frames").frame(
                    sender_frames(got["frames"], self.spec.fps, self.offset, target, self.paused)),
                "rates": record.table("sender", "rates").frame(rates),
                "controller": record.table("sender", "controller").frame(
                    self.control.rows if self.control else []),
            }  # fmt: skip
        else:
            frames: list[tuple[int, int, str, int | None]] = [
                (_to_mono(t, self.offset), int(ts), "assembled", int(size))
                      for ts, t, size, _key in got["frames"]]  # fmt: skip
            frames += [(_to_mono(t, self.offset), int(ts), "decoded", None)
                       for ts, t in got["decoded"]]  # fmt: skip
            info.update(feedback_from=None if encrypted(self.spec) else "wire",
                        decoded=int(rtp.get("framesDecoded", 0)), plis=int(rtp.get("pliCount", 0)),
                        nacks=int(rtp.get("nackCount", 0)),
                        fec_packets_received=int(rtp.get("fecPacketsReceived", 0)),
                        fec_packets_discarded=int(rtp.get("fecPacketsDiscarded", 0)))  # fmt: skip
            tables = {"frames": record.table("receiver", "frames").frame(sorted(frames))}
        record.EndpointRecord(self.role, "chromium", info, tables).write(self.out)


async def run(role: str, spec: StreamSpec, out: Path) -> None:
    inbox = Inbox()
    await inbox.open()
    endpoint = Endpoint(role, spec, out)
    try:
        await endpoint.run(inbox)
    except Exception as e:  # said at once: the orchestrator must not wait for the browser's end
        ended = endpoint.browser.ended()  # a dead browser is the cause: say it first
        tail = "" if ended else endpoint.browser.stderr_tail()
        emit({"type": "error", "error": (f"{ended}: " if ended else "") + f"{type(e).__name__}: {e}"
              + (f" (browser: {tail})" if tail else "")})  # fmt: skip
        raise Reported() from e
    finally:
        await endpoint.browser.close(keep_log=out / f"{role}.browser.log")


class Reported(Exception):
    """An error already sent to the orchestrator."""


def main(argv: list[str] | None = None) -> int:
    role, spec, out = endpoint_args(argv, __doc__)
    try:
        asyncio.run(run(role, spec, out))
    except Reported:
        return 1
    except Exception as e:
        emit({"type": "error", "error": f"{type(e).__name__}: {e}"})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
