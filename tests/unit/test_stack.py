"""Stacks own their options: unknown stacks, knobs of another stack and features a stack
lacks are one-line ConfigErrors; a spec read back from its dict is the same spec."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from testbed.errors import ConfigError
from testbed.rtc import stack as stacks
from testbed.rtc.spec import StreamSpec, parse_stream
from testbed.rtc.stack import check_features


class OtherStack:
    """A second stack with one option of its own (a stand-in: only its validation is used)."""

    name = "other"
    option_keys: tuple[str, ...] = ("pacing",)
    sources: tuple[str, ...] = ("synthetic",)
    codecs: tuple[str, ...] = ("vp8", "av1")
    fec_schemes: tuple[str, ...] = ("none",)
    audio_codecs: tuple[str, ...] = ()
    audio_ptimes_ms: tuple[int, ...] = ()
    native_abr: tuple[str, ...] = ()

    def parse_options(self, data: Mapping[str, Any], src: str) -> dict[str, Any]:
        return {"pacing": bool(data.get("pacing", True))}

    def check(self, spec: StreamSpec, src: str, roles: tuple[str, ...]) -> None:
        check_features(self, spec, src, roles)

    def endpoint_argv(self, role: str, spec_path: Path, out: Path) -> list[str]:
        return ["true"]


@pytest.fixture
def two_stacks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(stacks.STACKS, "other", f"{__name__}:OtherStack")


def test_default_stack_and_its_options_filled_in() -> None:
    spec = parse_stream({})
    assert spec.stack == "aiortc"
    assert spec.options == {"history_packets": 128, "nack": "aiortc", "nack_retry_ms": 70.0,
                            "nack_max_retries": 10, "late_packets": "aiortc"}  # fmt: skip
    flat = spec.to_dict()
    assert flat["nack"] == "aiortc" and "options" not in flat
    assert parse_stream(flat) == spec


def test_round_trip_with_every_kind_of_key() -> None:
    spec = parse_stream({"nack": "retry", "history_packets": 512, "fec": {"scheme": "rs"},
                         "abr": "budget", "abr_params": {"budget_ms": 50}, "bitrate_mbps": 1e-1})  # fmt: skip
    assert parse_stream(spec.to_dict()) == spec


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"stack": "gstreamer"}, "stream.stack", "'gstreamer' is unknown; valid: aiortc"),
        ({"stack": "other", "nack": "retry"}, "stream.nack", "an option of stack aiortc, not of other"),
        ({"pacing": False}, "stream.pacing", "an option of stack other, not of aiortc"),
        ({"codec": "av1"}, "stream.codec", "'av1' is not offered by stack aiortc; valid: vp8, h264"),
        ({"stack": "other", "source": "video"}, "stream.source", "not offered by stack other"),
        ({"stack": "other", "fec": "rs"}, "stream.fec.scheme", "not offered by stack other"),
        ({"codec": "theora"}, "stream.codec", "'theora' is unknown"),
        ({"colour": 1}, "stream.colour", "unknown key"),
    ],
)  # fmt: skip
def test_stack_errors(two_stacks: None, data: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_stream(data, "exp.yaml")
    assert e.value.key == key and words in e.value.message and e.value.exit_code == 2
    assert "\n" not in str(e.value)


def test_another_stack_takes_its_own_options(two_stacks: None) -> None:
    spec = parse_stream({"stack": "other", "pacing": False, "codec": "av1"})
    assert spec.options == {"pacing": False} and spec.to_dict()["pacing"] is False


@pytest.mark.parametrize(
    ("data", "key", "words"),
    [
        ({"stack": "chromium", "receiver_stack": "gst"}, "stream.receiver_stack", "'gst' is unknown"),
        ({"stack": "aiortc", "codec": "av1"}, "stream.codec", "not offered by stack aiortc"),
        ({"stack": "chromium", "nack": "retry"}, "stream.nack", "an option of stack aiortc, not of chromium"),
        ({"stack": "aiortc", "pacing_factor": 2}, "stream.pacing_factor", "an option of stack chromium"),
        ({"stack": "chromium", "receiver_stack": "aiortc", "fec": "flexfec"}, "stream.fec.scheme",
         "both ends of a mixed pair"),
        ({"stack": "chromium", "fec": "rs"}, "stream.fec.scheme", "not offered by stack chromium"),
        ({"stack": "chromium", "receiver_stack": "aiortc", "encryption": "off"}, "stream.encryption",
         "needs Chromium at both ends"),
        ({"stack": "chromium", "abr": "gcc"}, "stream.abr", "synthetic source"),
        ({"stack": "chromium", "abr": "budget"}, "stream.abr", "a synthetic source on chromium"),
        ({"stack": "chromium", "source": "video", "abr": "bola"}, "stream.abr", "known: accuracy_cap"),
        ({"stack": "chromium", "source": "video", "abr": "gcc", "abr_params": {"cap": 1}}, "stream.abr_params", "valid: cap_mbps"),
        ({"stack": "chromium", "fec": {"scheme": "ulpfec", "overhead": 0.5}}, "stream.fec.overhead",
         "libwebrtc's"),
        ({"stack": "chromium", "keyframe_period_s": 1}, "stream.keyframe_period_s", "makes key frames"),
    ],
)  # fmt: skip
def test_chromium_and_mixed_pair_errors(data: dict[str, Any], key: str, words: str) -> None:
    from testbed.rtc.chromium.browser import missing

    if missing() is not None and "receiver_stack" not in data and data["stack"] == "chromium":
        pytest.skip("the Chromium stack checks that the browser is installed first")
    with pytest.raises(ConfigError) as e:
        parse_stream(data, "exp.yaml")
    assert e.value.key == key and words in str(e.value), str(e.value)


def test_mixed_pair_round_trips_with_each_stacks_options() -> None:
    from testbed.rtc.chromium.browser import missing

    if missing() is not None:
        pytest.skip(str(missing()))
    spec = parse_stream({"stack": "chromium", "receiver_stack": "aiortc", "nack": "retry",
                         "pacing_factor": 4})  # fmt: skip
    assert (spec.stack_of("sender"), spec.stack_of("receiver")) == ("chromium", "aiortc")
    assert spec.stack_label() == "chromium->aiortc"
    assert spec.options["nack"] == "retry" and spec.options["pacing_factor"] == 4.0
    assert parse_stream(spec.to_dict()) == spec


def test_chromium_missing_is_one_line_that_says_make_setup(monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: Path) -> None:  # fmt: skip
    from testbed.rtc.chromium import browser

    monkeypatch.setattr(browser, "CHROMIUM", tmp_path / "no-chromium")
    with pytest.raises(ConfigError) as e:
        parse_stream({"stack": "chromium"}, "exp.yaml")
    assert e.value.key == "stream.stack" and "run `make setup`" in str(e.value)
