"""StreamSpec: what one WebRTC session sends, and how loss is repaired. Loaded strictly."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from testbed.errors import ConfigError
from testbed.fec.spec import FecSpec, parse_fec
from testbed.roi.scene import BUILTIN_SCENE
from testbed.roi.spec import RoiSpec, parse_roi

SOURCES = ("synthetic", "video", "roi")
CODECS = ("vp8", "h264")
NACK_MODES = ("aiortc", "retry", "off")
LATE_PACKETS = ("aiortc", "drop")


@dataclass(frozen=True)
class StreamSpec:
    """One unidirectional session: sender host -> receiver host.

    source: synthetic (frames of exactly bitrate/fps bytes, no encoder) or video (aiortc's
    VP8/H.264 encoder on a file or a built-in moving pattern, bitrate pinned).
    history_packets: the sender's retransmission history (aiortc: 128).
    nack: aiortc (one NACK when a gap appears), retry (re-request every nack_retry_ms up to
    nack_max_retries times), off. giveup_ms: a frame not complete by then is lost.
    abr: a bitrate controller (fixed, remb, budget, an entry point name or package.module:Class)
    with abr_params; bitrate_mbps is its starting point. fec: {scheme: none|xor|rs, ...}, see
    testbed.fec.spec; NACK still repairs what FEC cannot, unless nack: off.
    roi: the `roi` source's parameters (testbed.roi.spec.RoiSpec); video may be builtin:scene.
    late_packets: what the receiver's jitter buffer does with a packet 100+ sequence numbers
    behind its window (a late duplicate retransmission, which aiortc's NACKs provoke): aiortc
    (the default, as measured) takes it for a restarted stream: flushes every buffered packet,
    complete frames too, and sends a PLI; drop ignores it, as libwebrtc does.
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
    history_packets: int = 128
    nack: str = "aiortc"
    nack_retry_ms: float = 70.0
    nack_max_retries: int = 10
    giveup_ms: float = 1000.0
    late_packets: str = "aiortc"
    abr: str = "fixed"
    abr_params: dict[str, Any] = field(default_factory=dict)
    fec: dict[str, Any] = field(default_factory=lambda: {"scheme": "none"})
    roi: dict[str, Any] = field(default_factory=dict)
    drain_s: float = 1.5
    connect_timeout_s: float = 20.0
    sender: str = "sender"
    receiver: str = "receiver"

    def __post_init__(self) -> None:
        # recorded in results with every default filled in, however the spec was made
        object.__setattr__(self, "fec", FecSpec(**self.fec).to_dict())
        if self.source == "roi":
            object.__setattr__(self, "roi", RoiSpec(**self.roi).to_dict())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def fec_spec(self) -> FecSpec:
        return FecSpec(**self.fec)

    def roi_spec(self) -> RoiSpec:
        return RoiSpec(**self.roi)


def _num(
    data: Mapping[str, Any], key: str, src: str, lo: float, hi: float, *, open_lo: bool
) -> None:
    if key not in data or data[key] is None:
        return
    v = data[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ConfigError(src, f"stream.{key}", f"{v!r} is not a number")
    if (v <= lo if open_lo else v < lo) or v > hi:
        low = f"> {lo:g}" if open_lo else f">= {lo:g}"
        raise ConfigError(src, f"stream.{key}", f"{v} is out of range; valid: {low} and <= {hi:g}")


def parse_stream(data: Mapping[str, Any], src: str = "--stream") -> StreamSpec:
    """Validate a mapping into a StreamSpec; errors name the key and what is valid."""
    allowed = [f.name for f in fields(StreamSpec)]
    for key in data:
        if key not in allowed:
            raise ConfigError(src, f"stream.{key}", f"unknown key; valid: {', '.join(allowed)}")
    for key, lo, hi, open_lo in (
        ("bitrate_mbps", 0, 1000, True), ("fps", 0, 240, True), ("duration_s", 0, 86400, True),
        ("warmup_s", 0, 86400, False), ("keyframe_period_s", 0, 3600, True),
        ("keyframe_ratio", 1, 100, False), ("nack_retry_ms", 0, 10000, True),
        ("giveup_ms", 0, 600000, True), ("drain_s", 0, 600, False),
        ("connect_timeout_s", 0, 600, True),
    ):  # fmt: skip
        _num(data, key, src, lo, hi, open_lo=open_lo)
    for key, lo in (("width", 16), ("height", 16), ("history_packets", 1), ("nack_max_retries", 0)):
        v = data.get(key)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            raise ConfigError(src, f"stream.{key}", f"{v!r}: valid: a whole number >= {lo}")
    for key, valid in (("source", SOURCES), ("codec", CODECS), ("nack", NACK_MODES),
                       ("late_packets", LATE_PACKETS)):  # fmt: skip
        if key in data and data[key] not in valid:
            raise ConfigError(
                src, f"stream.{key}", f"{data[key]!r} is unknown; valid: {', '.join(valid)}"
            )
    data = dict(data)
    data["fec"] = parse_fec(data.get("fec"), src).to_dict()
    abr = data.get("abr", "fixed")
    if not isinstance(abr, str) or not abr:
        raise ConfigError(src, "stream.abr", f"{abr!r}: expected a controller name")
    params = data.get("abr_params") or {}
    if not isinstance(params, Mapping):
        raise ConfigError(
            src, "stream.abr_params", "expected a mapping of parameter names to values"
        )
    data["abr_params"] = dict(params)
    from testbed.abr.registry import make

    make(abr, params, initial_bps=float(data.get("bitrate_mbps", 4.0)) * 1e6,
         fps=float(data.get("fps", 30.0)), src=src)  # fmt: skip
    if data.get("source") == "roi":
        if data.get("codec", "h264") != "h264":
            raise ConfigError(
                src, "stream.codec", f"{data['codec']!r}: the roi source encodes H.264; valid: h264"
            )
        data["codec"] = "h264"
        data.setdefault("video", BUILTIN_SCENE)
        data["roi"] = parse_roi(
            data.get("roi"), src, int(data.get("width", 640)), int(data.get("height", 480))
        ).to_dict()
    elif data.get("roi"):
        raise ConfigError(
            src, "stream.roi", "only the roi source takes roi parameters (source: roi)"
        )
    spec = StreamSpec(**data)
    if spec.video is not None and spec.video != BUILTIN_SCENE:
        p = Path(spec.video)
        if not p.is_file():
            raise ConfigError(src, "stream.video", f"{spec.video}: no such video file")
        try:
            import av

            with av.open(str(p)) as container:
                if not container.streams.video:
                    raise ConfigError(src, "stream.video", f"{spec.video}: has no video stream")
        except ConfigError:
            raise
        except Exception as e:  # PyAV raises many kinds for unreadable files
            raise ConfigError(
                src, "stream.video", f"{spec.video}: cannot be read as video ({e})"
            ) from None
    if spec.source == "synthetic" and spec.bitrate_mbps * 1e6 / 8 / spec.fps < 16:
        raise ConfigError(
            src,
            "stream.bitrate_mbps",
            "frames would be under 16 bytes; raise the bitrate or lower fps",
        )
    return spec


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
