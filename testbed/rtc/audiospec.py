"""AudioSpec: the voice beside the video (stream.audio), loaded strictly.

  audio: {codec: opus, bitrate_kbps: 20, ptime_ms: 20}     # or off (the default), or on

The sender adds an audio track to the same peer connection (BUNDLE: the same 5-tuple as the
video), encoded at a constant bitrate (Opus CBR) in ptime_ms frames, one per RTP packet. Which
codecs and frame lengths a stack can send is the stack's to say (Stack.audio_codecs,
audio_ptimes_ms); both are checked before anything starts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from testbed import validate
from testbed.errors import ConfigError
from testbed.validate import strict_mapping

KEYS = ("enabled", "codec", "bitrate_kbps", "ptime_ms")
CODECS = ("opus",)  # what any stack may offer; each stack says which it has
PTIMES_MS = (10, 20, 40, 60)  # Opus frame lengths a packet may carry (RFC 7587)


@dataclass(frozen=True)
class AudioSpec:
    """enabled: send audio at all. codec: opus. bitrate_kbps: the encoder's constant bitrate
    (RMCAT's 20 kbps by default; Opus takes 6-510). ptime_ms: audio per packet."""

    enabled: bool = False
    codec: str = "opus"
    bitrate_kbps: float = 20.0
    ptime_ms: int = 20

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def bitrate_bps(self) -> float:
        """What the audio takes of the budget (0 when off)."""
        return self.bitrate_kbps * 1000 if self.enabled else 0.0


def parse_audio(value: Any, src: str, key: str = "stream.audio") -> AudioSpec:
    if value is None or value is False or value == "off":
        return AudioSpec()
    if value is True or value == "on":
        return AudioSpec(enabled=True)
    data = strict_mapping(value, KEYS, src, key, "{codec: opus, bitrate_kbps: 20, ptime_ms: 20}")
    data.setdefault("enabled", True)
    if not isinstance(data["enabled"], bool):
        raise ConfigError(src, f"{key}.enabled", f"{data['enabled']!r}: valid: true, false")
    if "codec" in data:
        validate.choice(data["codec"], CODECS, src, f"{key}.codec")
    if "bitrate_kbps" in data:
        data["bitrate_kbps"] = validate.number(data["bitrate_kbps"], src, f"{key}.bitrate_kbps",
                                               6, 510)  # fmt: skip
    if "ptime_ms" in data and data["ptime_ms"] not in PTIMES_MS:
        raise ConfigError(src, f"{key}.ptime_ms", f"{data['ptime_ms']!r}: valid: "
                          + ", ".join(map(str, PTIMES_MS)))  # fmt: skip
    return AudioSpec(**data)  # type: ignore[arg-type]
