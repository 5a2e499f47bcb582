"""libwebrtc through headless Chromium as a Stack: its options, what it offers, its endpoints."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from testbed import validate
from testbed.errors import ConfigError
from testbed.rtc.spec import StreamSpec
from testbed.rtc.stack import check_features

ENCRYPTION = ("auto", "on", "off")
ABR = ("fixed", "gcc")
FLEXFEC_TRIALS = "WebRTC-FlexFEC-03-Advertised/Enabled/WebRTC-FlexFEC-03/Enabled/"


@dataclass(frozen=True)
class ChromiumOptions:
    """encryption: auto (off between two Chromiums, so RTX originals, NACK entries and FEC
    headers are readable on the wire; on toward another stack, which needs DTLS-SRTP), on, off.
    field_trials: more libwebrtc field trials (`Name/Value/` pairs, --force-fieldtrials).
    pacing_factor: libwebrtc's pacer rate as a multiple of the target (its default 2.5;
    WebRTC-Video-Pacing), null: libwebrtc's own."""

    encryption: str = "auto"
    field_trials: str = ""
    pacing_factor: float | None = None


def options_of(spec: StreamSpec) -> ChromiumOptions:
    return ChromiumOptions(**{k: spec.options[k] for k in ChromiumStack.option_keys})


def encrypted(spec: StreamSpec) -> bool:
    """Whether the session runs DTLS-SRTP (auto: only when the peer is not Chromium)."""
    mode = options_of(spec).encryption
    if mode == "auto":
        return not (spec.stack_of("sender") == spec.stack_of("receiver") == "chromium")
    return mode == "on"


def field_trials(spec: StreamSpec) -> str:
    opts = options_of(spec)
    trials = opts.field_trials
    if spec.fec["scheme"] == "flexfec":
        trials += FLEXFEC_TRIALS
    if opts.pacing_factor is not None:
        trials += f"WebRTC-Video-Pacing/factor:{opts.pacing_factor:g}/"
    return trials


class ChromiumStack:
    name = "chromium"
    option_keys: tuple[str, ...] = tuple(f.name for f in fields(ChromiumOptions))
    sources: tuple[str, ...] = ("synthetic", "video")
    codecs: tuple[str, ...] = ("vp8", "vp9", "h264", "av1")
    fec_schemes: tuple[str, ...] = ("none", "ulpfec", "flexfec")  # libwebrtc's own
    audio_codecs: tuple[str, ...] = ("opus",)
    audio_ptimes_ms: tuple[int, ...] = (10, 20, 40, 60)  # libwebrtc honours the answer's a=ptime
    native_abr: tuple[str, ...] = ABR  # libwebrtc's own: a pin, or its send-side estimator;
    # any other controller of testbed.abr runs in the endpoint's process (rtc/chromium/control)

    def parse_options(self, data: Mapping[str, Any], src: str) -> dict[str, Any]:
        if "encryption" in data:
            validate.choice(data["encryption"], ENCRYPTION, src, "stream.encryption")
        trials = data.get("field_trials")
        if trials is not None and (not isinstance(trials, str) or trials.count("/") % 2):
            raise ConfigError(src, "stream.field_trials",
                              f"{trials!r}: expected 'Name/Value/' pairs, e.g. 'WebRTC-Foo/Enabled/'")  # fmt: skip
        if data.get("pacing_factor") is not None:
            validate.number(data["pacing_factor"], src, "stream.pacing_factor", 0.1, 1000)
        opts = ChromiumOptions(**{k: v for k, v in data.items() if v is not None})
        out = asdict(opts)
        if out["pacing_factor"] is not None:
            out["pacing_factor"] = float(out["pacing_factor"])
        return out

    def check(self, spec: StreamSpec, src: str, roles: tuple[str, ...]) -> None:
        from testbed.rtc.chromium.browser import missing

        why = missing()
        if why is not None:
            raise ConfigError(src, "stream.stack", why)
        check_features(self, spec, src, roles)
        if spec.source == "synthetic" and spec.abr != "fixed" and "sender" in roles:
            raise ConfigError(src, "stream.abr", f"{spec.abr!r}: a synthetic source on "
                              "chromium pads frames to a fixed size, which would fight the "
                              "estimator; use abr: fixed, or source: video")  # fmt: skip
        if spec.abr == "fixed" and spec.abr_params:
            raise ConfigError(src, "stream.abr_params", "abr fixed takes no parameters")
        extra = set(spec.abr_params) - {"max_mbps", "cap_mbps"}
        if spec.abr == "gcc" and extra:
            raise ConfigError(src, "stream.abr_params", f"unknown for gcc: {sorted(extra)}; "
                              "valid: cap_mbps (the ceiling GCC runs below; max_mbps: the same)")  # fmt: skip
        if spec.keyframe_period_s is not None:
            raise ConfigError(src, "stream.keyframe_period_s", "stack chromium: libwebrtc "
                              "makes key frames itself (at start and on PLI); leave it unset")  # fmt: skip
        mixed = spec.stack_of("sender") != spec.stack_of("receiver")
        if mixed and options_of(spec).encryption == "off":
            raise ConfigError(src, "stream.encryption", "off needs Chromium at both ends "
                              "(the other stack only speaks DTLS-SRTP); valid here: auto, on")  # fmt: skip
        if spec.viewer.get("enabled") and "receiver" in roles:
            raise ConfigError(src, "stream.viewer", "the AI viewer's intake runs on an aiortc "
                              "receiver; set receiver_stack: aiortc")  # fmt: skip

    def endpoint_argv(self, role: str, spec_path: Path, out: Path) -> list[str]:
        return [sys.executable, "-m", "testbed.rtc.chromium.endpoint", role,
                "--spec", str(spec_path), "--out", str(out)]  # fmt: skip
