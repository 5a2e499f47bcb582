"""The AI viewer's pure parts: question files (the real DeViBench file), the model's resize,
the intake's sampling, Wilson intervals, strict answer letters, built-in question sets."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.rtc.spec import parse_stream
from testbed.viewer.intake import Intake
from testbed.viewer.judges.mllm import parse_letter
from testbed.viewer.judging import wilson
from testbed.viewer.questions import load_questions, parse_questions
from testbed.viewer.resize import smart_resize
from testbed.viewer.scenes import builtin_questions
from testbed.viewer.spec import ViewerSpec
from tests.conftest import ROOT

DEVIBENCH = ROOT.parent / "shared" / "devibench" / "datasets.csv"


@pytest.mark.skipif(not DEVIBENCH.exists(), reason="../shared/devibench is not beside the repo")
def test_the_real_devibench_file_parses() -> None:
    qs = load_questions(DEVIBENCH)
    assert len(qs) == 1074 and all(len(q.options) == 4 for q in qs)
    types = {t: sum(q.task_type == t for q in qs) for t in {q.task_type for q in qs}}
    assert types["Text-Rich Understanding"] == 589 and types["Counting"] == 65
    first = qs[0]  # the file starts with a BOM; its options hold line breaks inside quotes
    assert first.sample_folder == "sample_1" and first.start_s == 10 and first.answer == "B"
    assert first.options["B"] == "Ramon Sanchez-Pizjuan" and first.window_s() == (10, 15)
    assert qs[1].options == {"A": "YURARY", "B": "YURAR", "C": "YURRY", "D": "YURA"}  # one line


HEADER = "question,options,standard_answer,task_type\n"


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("question,options,task_type\nq,A) a B) b,Counting\n", "missing column(s) standard_answer"),
        (HEADER + 'q,"A) a\nB) b",C,Counting\n', "'C' is not among its options (A, B)"),
        (HEADER + "q,A) a C) b,A,Counting\n", "out of order"),
        (HEADER + "q,just text,A,Counting\n", "at least two entries"),
        (
            "question,options,standard_answer,task_type,colour\nq,A) a B) b,A,t,red\n",
            "unknown column",
        ),
    ],
)
def test_bad_question_files(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_questions(text, "q.csv")
    assert words in str(e.value) and "\n" not in str(e.value) and e.value.exit_code == 2


def test_extended_columns() -> None:
    qs = parse_questions("id,question,options,standard_answer,task_type,truth_text,truth_count,"
                         "boxes\nx1,q,A) a B) b,B,Counting,hello,3,\"[[1, 2, 3, 4]]\"\n", "q.csv")  # fmt: skip
    assert qs[0].qid == "x1" and qs[0].truth_count == 3 and qs[0].boxes == ((1, 2, 3, 4),)
    assert qs[0].window_s() == (0.0, float("inf"))


def test_qwen_resize() -> None:
    assert smart_resize(720, 1280, 602_112) == (560, 1008)  # the paper's probe: 1008x560
    assert smart_resize(480, 640, 602_112) == (476, 644)
    h, w = smart_resize(1080, 1920, 602_112)
    assert h % 28 == 0 and w % 28 == 0 and h * w <= 602_112


def test_intake_takes_the_first_frame_of_each_slot(tmp_path: Path) -> None:
    intake = Intake(ViewerSpec(enabled=True, fps=2), tmp_path)
    base = (1 << 32) - 6000  # the RTP clock wraps during the session
    slots = [intake.due((base + 3000 * k) % (1 << 32)) for k in range(61)]
    assert [k for k, s in enumerate(slots) if s is not None] == [0, 15, 30, 45, 60]
    assert intake.due(base - 3000) is None  # an older frame than the first
    fresh = Intake(ViewerSpec(enabled=True, fps=2), tmp_path)
    assert fresh.due(0) == 0 and fresh.due(3000 * 16) == 1 and fresh.due(3000 * 17) is None


def test_wilson() -> None:
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 10)[0] == 0 and wilson(10, 10)[1] == pytest.approx(1)


@pytest.mark.parametrize(("reply", "letter"), [("B", "B"), (" (c). ", "C"), ("B)", "B"),
                                               ("The answer is B", None), ("E", None), ("AB", None)])  # fmt: skip
def test_strict_letters(reply: str, letter: str | None) -> None:
    assert parse_letter(reply, ["A", "B", "C", "D"]) == letter


@pytest.mark.parametrize("scene", ["builtin:document", "builtin:markers"])
def test_builtin_distractors_have_the_answers_length(scene: str) -> None:
    qs = builtin_questions(scene, 1280, 720)
    assert len(qs) >= 7
    for q in qs:
        true = q.options[q.answer]
        assert all(len(o) == len(true) for o in q.options.values()), q
        assert len(set(q.options.values())) == 4
    assert {q.answer for q in qs} != {"A"}  # the answer's position varies


def test_viewer_keys_are_checked() -> None:
    spec = parse_stream({"source": "roi", "video": "builtin:document", "viewer": {"fps": 1}})
    assert spec.viewer_spec() == ViewerSpec(enabled=True, fps=1.0)
    for bad, key in (({"viewer": True}, "stream.viewer"),
                     ({"source": "video", "viewer": {"judge": "gpt5"}}, "stream.viewer.judge"),
                     ({"source": "video", "viewer": {"fps": 0}}, "stream.viewer.fps"),
                     ({"source": "video", "viewer": {"colour": 1}}, "stream.viewer.colour")):  # fmt: skip
        with pytest.raises(ConfigError) as e:
            parse_stream(bad)
        assert e.value.key == key, e.value


def test_bitrate_at_90_percent_of_top_accuracy() -> None:
    import pandas as pd

    from testbed.viewer.offline import bitrate_at_share, sample_indices

    t = pd.DataFrame({"roi": ["uniform"] * 3 + ["ROI"] * 3,
                      "achieved_mbps": [0.1, 0.2, 0.4, 0.1, 0.2, 0.4],
                      "accuracy": [0.25, 0.5, 1.0, 0.5, 0.95, 1.0]})  # fmt: skip
    at = bitrate_at_share(t)
    assert at["ROI"] == pytest.approx(0.1 + 0.1 * 0.4 / 0.45)  # linear between measured points
    assert at["uniform"] == pytest.approx(0.2 + 0.2 * 0.8)
    assert sample_indices(90, 30, 2, 30) == {30, 45, 60, 75}
