"""aiortc as a Stack: its own stream options, what it supports, how its endpoints start."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from testbed import validate
from testbed.rtc.spec import StreamSpec
from testbed.rtc.stack import check_features

NACK_MODES = ("aiortc", "retry", "off")
LATE_PACKETS = ("aiortc", "drop")
DEFAULT_HISTORY_PACKETS = 128  # aiortc's RTP_HISTORY_SIZE


@dataclass(frozen=True)
class AiortcOptions:
    """history_packets: the sender's retransmission history and the receiver's NACK window
    (aiortc: 128). nack: aiortc (one NACK when a gap appears), retry (re-request every
    nack_retry_ms up to nack_max_retries times), off. late_packets: what the jitter buffer does
    with a packet 100+ sequence numbers behind its window (a late duplicate retransmission):
    aiortc (the default, as measured) takes it for a restarted stream and flushes everything;
    drop ignores it, as libwebrtc does."""

    history_packets: int = DEFAULT_HISTORY_PACKETS
    nack: str = "aiortc"
    nack_retry_ms: float = 70.0
    nack_max_retries: int = 10
    late_packets: str = "aiortc"


def options_of(spec: StreamSpec) -> AiortcOptions:
    return AiortcOptions(**{k: spec.options[k] for k in AiortcStack.option_keys})


class AiortcStack:
    name = "aiortc"
    option_keys: tuple[str, ...] = tuple(f.name for f in fields(AiortcOptions))
    sources: tuple[str, ...] = ("synthetic", "video", "roi")
    codecs: tuple[str, ...] = ("vp8", "h264")
    fec_schemes: tuple[str, ...] = (
        "none",
        "xor",
        "rs",
    )  # the testbed's own FEC, sent as RTP beside the media
    audio_codecs: tuple[str, ...] = ("opus",)
    audio_ptimes_ms: tuple[int, ...] = (20,)  # aiortc's Opus encoder packs 960 samples at 48 kHz
    native_abr: tuple[str, ...] = ()  # every controller comes from testbed.abr

    def parse_options(self, data: Mapping[str, Any], src: str) -> dict[str, Any]:
        if data.get("history_packets") is not None:
            validate.integer(data["history_packets"], src, "stream.history_packets", 1)
        if data.get("nack_max_retries") is not None:
            validate.integer(data["nack_max_retries"], src, "stream.nack_max_retries", 0)
        if data.get("nack_retry_ms") is not None:
            validate.number(data["nack_retry_ms"], src, "stream.nack_retry_ms", 0, 10000,
                            lo_open=True)  # fmt: skip
        if "nack" in data:
            validate.choice(data["nack"], NACK_MODES, src, "stream.nack")
        if "late_packets" in data:
            validate.choice(data["late_packets"], LATE_PACKETS, src, "stream.late_packets")
        given = {k: v for k, v in data.items() if v is not None}
        opts = AiortcOptions(**given)
        return {k: (float(v) if k == "nack_retry_ms" else v) for k, v in asdict(opts).items()}

    def check(self, spec: StreamSpec, src: str, roles: tuple[str, ...]) -> None:
        check_features(self, spec, src, roles)

    def endpoint_argv(self, role: str, spec_path: Path, out: Path) -> list[str]:
        return [sys.executable, "-m", "testbed.rtc.aiortc.endpoint", role,
                "--spec", str(spec_path), "--out", str(out)]  # fmt: skip
