"""StreamSpec: what one WebRTC session sends, on which stack, and how loss is repaired.

Loaded strictly, once: a cell's job and an endpoint process read `to_dict()` back through
parse_stream, so what runs is what was validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from testbed import validate
from testbed.config import TopologySpec
from testbed.errors import ConfigError
from testbed.fec.spec import FecSpec, parse_fec
from testbed.roi.scene import BUILTIN_SCENE, BUILTINS
from testbed.roi.scenes import SCENES
from testbed.roi.spec import RoiSpec, parse_roi
from testbed.rtc.audiospec import AudioSpec, parse_audio
from testbed.rtc.stopping import StopWhen, parse_stop_when
from testbed.viewer.spec import ViewerSpec, parse_viewer

SOURCES = ("synthetic", "video", "roi")
CODECS = ("vp8", "vp9", "h264", "av1")  # what any stack may offer; each stack says which it has
DEFAULT_STACK = "aiortc"
MIN_FRAME_BYTES = 16  # a synthetic frame carries a 16-byte header (testbed.rtc.sources)


@dataclass(frozen=True)
class StreamSpec:
    """One unidirectional session: sender host -> receiver host, on one WebRTC stack.

    source: synthetic (frames of exactly bitrate/fps bytes, no encoder), video (the stack's
    encoder on a file or a built-in moving pattern, bitrate pinned) or roi (context-aware H.264,
    testbed.roi). giveup_ms: a frame not complete by then is lost. abr: a bitrate controller
    (fixed, remb, budget, an entry point name or package.module:Class) with abr_params;
    bitrate_mbps is its starting point. fec: {scheme: none|xor|rs, ...}, see testbed.fec.spec.
    roi: the `roi` source's parameters (testbed.roi.spec.RoiSpec); video may be builtin:scene.
    audio: a voice beside the video (testbed.rtc.audiospec.AudioSpec; off by default).
    pauses: [[from_s, to_s], ...] after the connection during which the sender sends no media
    (video nor audio; RTCP goes on), then resumes; the stream still ends at duration_s.
    send_fps: send at most this many frames per second (e.g. the AI viewer's intake rate or a
    multiple of it); the source still runs at fps. A controller's Decision.max_fps overrides it.
    stop_when: end the stream once its latency statistic is settled (testbed.rtc.stopping);
    duration_s is then the longest it may run.
    stack: which WebRTC implementation runs the endpoints (testbed.rtc.stack); sender_stack /
    receiver_stack give one role another (a mixed pair). `options` holds the keys only those
    stacks have (aiortc: nack, history_packets, ...; chromium: encryption, field_trials, ...),
    validated by them, with their defaults filled in. In files and cell.json they sit beside
    the others.
    """

    source: str = "synthetic"
    bitrate_mbps: float = 4.0
    fps: float = 30.0
    duration_s: float = 20.0
    warmup_s: float = 0.0
    keyframe_period_s: float | None = None
    keyframe_ratio: float = 1.0
    codec: str = "vp8"
    video: str | None = None
    width: int = 640
    height: int = 480
    giveup_ms: float = 1000.0
    abr: str = "fixed"
    abr_params: dict[str, Any] = field(default_factory=dict)
    fec: dict[str, Any] = field(default_factory=lambda: {"scheme": "none"})
    roi: dict[str, Any] = field(default_factory=dict)
    viewer: dict[str, Any] = field(default_factory=dict)
    audio: dict[str, Any] = field(default_factory=dict)
    pauses: tuple[tuple[float, float], ...] = ()
    send_fps: float | None = None
    stop_when: dict[str, Any] | None = None
    drain_s: float = 1.5
    connect_timeout_s: float = 20.0
    sender: str = "sender"
    receiver: str = "receiver"
    stack: str = DEFAULT_STACK
    sender_stack: str | None = None
    receiver_stack: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # recorded in results with every default filled in, however the spec was made
        object.__setattr__(self, "fec", FecSpec(**self.fec).to_dict())
        if self.source == "roi":
            object.__setattr__(self, "roi", RoiSpec(**self.roi).to_dict())
        object.__setattr__(self, "viewer", ViewerSpec(**self.viewer).to_dict())
        object.__setattr__(self, "audio", AudioSpec(**self.audio).to_dict())

    def to_dict(self) -> dict[str, Any]:
        """Flat, as a user writes it (the stack's options beside the generic keys): what
        parse_stream reads back to an equal spec."""
        out = asdict(self)
        options = out.pop("options")
        return {**out, **options}

    def stack_of(self, role: str) -> str:
        """The stack that runs this role's endpoint (sender_stack / receiver_stack, else stack)."""
        own = self.sender_stack if role == "sender" else self.receiver_stack
        return own or self.stack

    def stack_label(self) -> str:
        """One name for the pair: 'chromium', or 'chromium->aiortc' for a mixed one."""
        a, b = self.stack_of("sender"), self.stack_of("receiver")
        return a if a == b else f"{a}->{b}"

    def fec_spec(self) -> FecSpec:
        return FecSpec(**self.fec)

    def roi_spec(self) -> RoiSpec:
        return RoiSpec(**self.roi)

    def viewer_spec(self) -> ViewerSpec:
        return ViewerSpec(**self.viewer)

    def audio_spec(self) -> AudioSpec:
        return AudioSpec(**self.audio)

    def stop_rule(self) -> StopWhen | None:
        return StopWhen(**self.stop_when) if self.stop_when else None


GENERIC_KEYS = tuple(f.name for f in fields(StreamSpec) if f.name != "options")
_NUMBERS = (
    ("bitrate_mbps", 0, 1000, True), ("fps", 0, 240, True), ("duration_s", 0, 86400, True),
    ("warmup_s", 0, 86400, False), ("keyframe_period_s", 0, 3600, True),
    ("keyframe_ratio", 1, 100, False), ("giveup_ms", 0, 600000, True), ("drain_s", 0, 600, False),
    ("connect_timeout_s", 0, 600, True), ("send_fps", 0, 240, True),
)  # fmt: skip


def parse_stream(data: Mapping[str, Any], src: str = "--stream") -> StreamSpec:
    """Validate a mapping into a StreamSpec; errors name the key and what is valid.

    Generic keys are checked here; every other key goes to the chosen stack, which knows its
    own options and which sources, codecs and FEC schemes it supports.
    """
    from testbed.rtc.stack import get_stack, owners

    stack = get_stack(data.get("stack", DEFAULT_STACK), src)
    role_stacks = {
        role: get_stack(data.get(f"{role}_stack") or stack.name, src, f"stream.{role}_stack")
        for role in ("sender", "receiver")
    }
    used = list({st.name: st for st in role_stacks.values()}.values())
    own_keys = tuple(k for st in used for k in st.option_keys)
    names = " and ".join(st.name for st in used)
    generic = {k: v for k, v in data.items() if k in GENERIC_KEYS}
    rest = {k: v for k, v in data.items() if k not in GENERIC_KEYS}
    for key in rest:
        if key not in own_keys:
            others = owners(key)
            if others:
                raise ConfigError(src, f"stream.{key}", f"an option of stack {', '.join(others)}, "
                                  f"not of {names}; {names}'s options: "
                                  f"{', '.join(own_keys) or 'none'}")  # fmt: skip
            raise ConfigError(src, f"stream.{key}", "unknown key; valid: "
                              f"{', '.join(GENERIC_KEYS + own_keys)}")  # fmt: skip
    for role, st in role_stacks.items():
        generic[f"{role}_stack"] = st.name
    generic["stack"] = stack.name
    for key, lo, hi, open_lo in _NUMBERS:
        if generic.get(key) is not None:
            validate.number(generic[key], src, f"stream.{key}", lo, hi, lo_open=open_lo)
    for key, lo in (("width", 16), ("height", 16)):
        if generic.get(key) is not None:
            validate.integer(generic[key], src, f"stream.{key}", lo)
    for key, valid in (("source", SOURCES), ("codec", CODECS)):
        if key in generic:
            validate.choice(generic[key], valid, src, f"stream.{key}")
    generic["fec"] = parse_fec(generic.get("fec"), src).to_dict()
    abr = generic.get("abr", "fixed")
    if not isinstance(abr, str) or not abr:
        raise ConfigError(src, "stream.abr", f"{abr!r}: expected a controller name")
    params = generic.get("abr_params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(
            src, "stream.abr_params", "expected a mapping of parameter names to values"
        )
    generic["abr_params"] = dict(params)
    if abr not in role_stacks["sender"].native_abr:
        from testbed.abr.registry import make

        make(abr, params, initial_bps=float(generic.get("bitrate_mbps", 4.0)) * 1e6,
             fps=float(generic.get("fps", 30.0)), src=src)  # fmt: skip
    if generic.get("source") == "roi":
        if generic.get("codec", "h264") != "h264":
            raise ConfigError(src, "stream.codec",
                              f"{generic['codec']!r}: the roi source encodes H.264; valid: h264")  # fmt: skip
        generic["codec"] = "h264"
        generic.setdefault("video", BUILTIN_SCENE)
        roi = dict(generic.get("roi") or {})
        if generic["video"] in SCENES and roi.get("scorer", "oracle") == "oracle":
            roi.setdefault("regions", generic["video"])  # the scene knows its relevant region
            generic["roi"] = roi
        from testbed.roi.scorers import check_scorer

        roi_spec = parse_roi(
            generic.get("roi"), src, int(generic.get("width", 640)), int(generic.get("height", 480))
        )
        check_scorer(roi_spec, src, "stream.roi")
        generic["roi"] = roi_spec.to_dict()
    elif generic.get("roi"):
        raise ConfigError(
            src, "stream.roi", "only the roi source takes roi parameters (source: roi)"
        )
    generic["viewer"] = parse_viewer(generic.get("viewer"), src).to_dict()
    generic["audio"] = parse_audio(generic.get("audio"), src).to_dict()
    stop = parse_stop_when(generic.get("stop_when"), float(generic.get("duration_s", 20.0)), src)
    generic["stop_when"] = stop.to_dict() if stop is not None else None
    generic["pauses"] = parse_pauses(generic.get("pauses"), float(generic.get("duration_s", 20.0)),
                                     src, "stream.pauses")  # fmt: skip
    if generic["viewer"]["enabled"] and generic.get("source", "synthetic") == "synthetic":
        raise ConfigError(src, "stream.viewer", "the AI viewer needs decodable video; use "
                          "source: video or roi (e.g. video: builtin:document)")  # fmt: skip
    generic["options"] = {
        k: v for st in used for k, v in
        st.parse_options({k: v for k, v in rest.items() if k in st.option_keys}, src).items()
    }  # fmt: skip
    spec = StreamSpec(**generic)
    if spec.video is not None and spec.video not in BUILTINS:
        _check_video(spec.video, src)
    if spec.source == "synthetic" and spec.bitrate_mbps * 1e6 / 8 / spec.fps < MIN_FRAME_BYTES:
        raise ConfigError(
            src,
            "stream.bitrate_mbps",
            f"frames would be under {MIN_FRAME_BYTES} bytes; raise the bitrate or lower fps",
        )
    if spec.stop_when and "chromium" in (spec.stack_of("sender"), spec.stack_of("receiver")):
        raise ConfigError(src, "stream.stop_when", "needs the sender's per-frame latency "
                          "feedback, which only an aiortc pair sends; valid: stack aiortc at "
                          "both ends (or precision: across repetitions)")  # fmt: skip
    if spec.send_fps is not None and spec.send_fps > spec.fps:
        raise ConfigError(src, "stream.send_fps", f"{spec.send_fps:g} is more than fps "
                          f"{spec.fps:g}; valid: (0, fps]")  # fmt: skip
    for st in used:
        st.check(spec, src, tuple(r for r, x in role_stacks.items() if x.name == st.name))
    return spec


def parse_pauses(value: Any, duration_s: float, src: str,
                 key: str) -> tuple[tuple[float, float], ...]:  # fmt: skip
    """[[from_s, to_s], ...]: in order, not overlapping, within (0, duration_s]."""
    return validate.pauses(value, src, key, 0, duration_s)


def _check_video(video: str, src: str) -> None:
    p = Path(video)
    if not p.is_file():
        raise ConfigError(src, "stream.video", f"{video}: no such video file")
    try:
        import av

        with av.open(str(p)) as container:
            if not container.streams.video:
                raise ConfigError(src, "stream.video", f"{video}: has no video stream")
    except ConfigError:
        raise
    except Exception as e:  # PyAV raises many kinds for unreadable files
        raise ConfigError(src, "stream.video", f"{video}: cannot be read as video ({e})") from None


def set_key(data: dict[str, Any], key: str, value: Any) -> None:
    """Set a stream key; a dotted one (roi.enabled, fec.scheme) inside its mapping."""
    head, _, rest = key.partition(".")
    if not rest:
        data[key] = value
        return
    inner = data.get(head)
    inner = dict(inner) if isinstance(inner, Mapping) else {}
    set_key(inner, rest, value)
    data[head] = inner


def session_streams(
    topology: TopologySpec, spec: StreamSpec
) -> list[tuple[str | None, float, StreamSpec]]:
    """(name, start_s, stream) of each session of a cell: one unnamed (spec) when the topology
    names none; else each of its `sessions:`, its stream keys over spec's, read again by
    parse_stream (an error names the session). Checked before anything starts."""
    if not topology.sessions:
        _check_route(topology, spec, "stream")
        return [(None, 0.0, spec)]
    out: list[tuple[str | None, float, StreamSpec]] = []
    for d in topology.sessions:
        base = spec.to_dict()
        if {"stack", "sender_stack", "receiver_stack"} & {k for k, _ in d.stream}:
            # another stack: the cell's stack-specific keys (its resolved options) are not this
            # session's; the session's own stack keys and its stack's defaults are
            base = {k: v for k, v in base.items()
                    if k not in spec.options and k not in ("sender_stack", "receiver_stack")}  # fmt: skip
        data = {**base, **dict(d.stream), "sender": d.sender, "receiver": d.receiver}
        if d.stop_s is not None:
            data["duration_s"] = d.stop_s - d.start_s
        if d.pauses:
            data["pauses"] = d.stream_pauses()
        try:
            one = parse_stream(data, topology.source)
        except ConfigError as e:
            key = e.key.removeprefix("stream.")
            raise ConfigError(e.source, f"sessions.{d.name}.stream.{key}", e.message) from None
        _check_route(topology, one, f"sessions.{d.name}")
        out.append((d.name, d.start_s, one))
    return out


def _check_route(topology: TopologySpec, spec: StreamSpec, key: str) -> None:
    """The media needs a way from the sender to the receiver: a link, or routes through
    router hosts (testbed.net.routes)."""
    from testbed.net.routes import path

    ends = {spec.sender, spec.receiver}
    if not ends <= set(topology.hosts) or any(set(lk.between) == ends for lk in topology.links):
        return  # an unknown host is said by the caller, naming its key
    if not path(topology, spec.sender, spec.receiver):
        raise ConfigError(topology.source, key, f"no route from {spec.sender} to "
                          f"{spec.receiver}: a path needs router hosts (forward: true)")  # fmt: skip
