"""The base layer's one-definition helpers: atomic files, /proc stat, number checks, YAML."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from testbed import validate, yamlio
from testbed.errors import ConfigError
from testbed.files import write_atomic, write_json_atomic
from testbed.procstat import read_stat
from testbed.versions import package_versions


def test_atomic_write_replaces_whole_and_leaves_nothing(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    write_json_atomic(p, {"x": 1})
    write_atomic(p, b"{}")
    assert p.read_text() == "{}" and [q.name for q in tmp_path.iterdir()] == ["a.json"]


def test_proc_stat_of_this_process_and_a_gone_one() -> None:
    me = read_stat(os.getpid())
    assert me is not None and not me.finished and me.start_ticks > 0 and me.cpu_ticks >= 0
    assert me.session == os.getsid(0)
    assert read_stat(2**22 + 12345) is None


@pytest.mark.parametrize(
    ("value", "words"),
    [(True, "not a number"), ("3", "not a number"), (float("nan"), "out of range"),
     (-1, "out of range; valid: [0, 100]"), (101, "out of range")],
)  # fmt: skip
def test_number(value: object, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        validate.number(value, "f.yaml", "a.loss_pct", 0, 100)
    assert validate.number(1e-5, "f", "k", 0, 100) == 1e-5


def test_integer_and_choice() -> None:
    with pytest.raises(ConfigError, match="whole number 1 to 254"):
        validate.integer(2.0, "f", "k", 1, 254)
    with pytest.raises(ConfigError, match="valid: a, b"):
        validate.choice("c", ("a", "b"), "f", "k")


def test_yaml_12_numbers() -> None:
    assert yamlio.loads("[1e-5, 1E3, .5, 3ms, 1_0, '1e-5']") == [
        1e-5,
        1000.0,
        0.5,
        "3ms",
        10,
        "1e-5",
    ]


def test_recorded_versions() -> None:
    v = package_versions()
    assert v["aiortc"] == "1.16.0" and set(v) >= {"rtc-testbed", "numpy", "pandas"}
