"""The AI viewer with real recognizers (Tesseract, OpenCV's ArUco), a local server speaking the
OpenAI chat-completions protocol (no MLLM can run here: the server answers with the ocr judge),
a real session whose receiver takes frames, and DeViBench's harness on a clip made here."""

from __future__ import annotations

import base64
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import av
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from testbed.roi.scenes import scene
from testbed.viewer.judges import ViewerFrame, make_judge
from testbed.viewer.judging import score
from testbed.viewer.questions import Question, write_questions
from testbed.viewer.resize import resize_rgb
from testbed.viewer.scenes import builtin_questions
from tests.system.conftest import namespaces_of, run_cli
from tests.system.test_stream import P2P


def clean_frames(name: str, n: int = 3) -> list[ViewerFrame]:
    s = scene(name, 1280, 720)
    return [ViewerFrame(np.asarray(resize_rgb(s.rgb(i * 15), 602_112)), (1280, 720), i / 2, i * 15)
            for i in range(n)]  # fmt: skip


def test_ocr_reads_the_clean_document() -> None:
    qs = builtin_questions("builtin:document", 1280, 720)
    answers = score(make_judge("ocr", None), qs, clean_frames("builtin:document", 2))
    big = answers[~answers.task_type.str.contains("12 px")]
    assert big.correct.all(), answers[["qid", "answer", "expected", "raw"]]
    assert big.char_accuracy.min() > 0.8


def test_markers_judge_counts_and_identifies() -> None:
    answers = score(make_judge("markers", None), builtin_questions("builtin:markers", 1280, 720),
                    clean_frames("builtin:markers"))  # fmt: skip
    assert answers.correct.all(), answers[["qid", "answer", "expected", "raw"]]


class _Server:
    """An OpenAI-compatible /v1/chat/completions on 127.0.0.1 that reads the images with the
    ocr judge and answers with a letter (or, on purpose, with a sentence)."""

    def __init__(self, chatty: bool = False) -> None:
        judge, requests = make_judge("ocr", None), []

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                requests.append(body)
                content = body["messages"][0]["content"]
                frames = []
                for i, part in enumerate(c for c in content if c["type"] == "image_url"):
                    png = base64.b64decode(part["image_url"]["url"].split(",", 1)[1])
                    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
                    frames.append(ViewerFrame(rgb, (rgb.shape[1], rgb.shape[0]), i, i))
                text = next(c["text"] for c in content if c["type"] == "text")
                lines = text.split("Options:\n", 1)[1].splitlines()
                options = {ln[0]: ln[3:] for ln in lines if len(ln) > 3 and ln[1] == ")"}
                q = Question("x", text, options, "A", "t")
                letter = judge.answer(q, frames).letter
                reply = f"I think it is {letter}" if chatty else f"{letter}"
                out = json.dumps(
                    {"choices": [{"message": {"role": "assistant", "content": reply}}]}
                )
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(out.encode())

            def log_message(self, *args: object) -> None:
                pass

        self.requests = requests
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def server() -> Iterator[_Server]:
    s = _Server()
    yield s
    s.httpd.shutdown()


def test_mllm_judge_against_a_local_openai_compatible_server(server: _Server) -> None:
    qs = builtin_questions("builtin:document", 1280, 720)[:4]
    judge = make_judge("mllm", {"base_url": server.url, "model": "stand-in"})
    answers = score(judge, qs, clean_frames("builtin:document", 2))
    assert answers.correct.all() and (answers.latency_ms > 0).all()
    body = server.requests[0]
    assert body["temperature"] == 0 and body["model"] == "stand-in"
    assert sum(c["type"] == "image_url" for c in body["messages"][0]["content"]) == 2


def test_mllm_failures_are_recorded_per_question() -> None:
    chatty = _Server(chatty=True)
    try:
        qs = builtin_questions("builtin:document", 1280, 720)[:2]
        frames = clean_frames("builtin:document", 1)
        a = score(make_judge("mllm", {"base_url": chatty.url, "model": "m"}), qs, frames)
        assert a.failed.all() and a.error.str.contains("not an option letter").all()
        assert a.raw.str.startswith("I think").all()
    finally:
        chatty.httpd.shutdown()
    down = make_judge("mllm", {"base_url": "http://127.0.0.1:9/v1", "model": "m", "retries": 1,
                               "timeout_s": 2})  # fmt: skip
    a = score(down, qs, frames)
    assert a.failed.all() and a.error.str.contains("127.0.0.1:9").all() and (a.attempts == 2).all()


def test_session_with_the_viewer(run: str, tmp_path: Path) -> None:
    out = tmp_path / "cell"
    res = run_cli("stream", str(P2P), "--name", run, "-o", str(out), "--source", "roi",
                  "--bitrate-mbps", "0.6", "--duration-s", "5",
                  *[a for kv in ("video=builtin:document", "width=1280", "height=720",
                                 "viewer.enabled=true") for a in ("--stream-set", kv)])  # fmt: skip
    assert res.returncode == 0, res.stderr
    intake = pd.read_parquet(out / "intake.parquet")
    assert 9 <= len(intake) <= 10 and (intake.width == 1008).all() and (intake.height == 560).all()
    assert (intake.frame_id.diff().dropna() == 15).all()  # 2 fps of a 30 fps capture
    assert (intake.age_ms > 30).all() and (intake.decoded_ns > intake.complete_ns).all()
    assert Image.open(out / intake.file[0]).size == (1008, 560)
    acc = json.loads((out / "accuracy.ocr.json").read_text())
    assert acc["all"]["questions"] == 12 and acc["all"]["accuracy"] >= 0.6, acc
    assert json.loads((out / "cell.json").read_text())["viewer"]["judge"] == "ocr"
    again = run_cli("judge", str(out), "--judge", "markers")  # another judge, its own files
    assert again.returncode == 0 and (out / "answers.markers.parquet").exists(), again.stderr
    assert namespaces_of(run) == []


def _clip(path: Path, frames: int = 90) -> None:
    s = scene("builtin:document", 1280, 720)
    with av.open(str(path), "w") as c:
        st = c.add_stream("libx264", rate=30)
        st.width, st.height, st.pix_fmt = 1280, 720, "yuv420p"
        st.options = {"crf": "12", "preset": "ultrafast"}
        for i in range(frames):
            f = av.VideoFrame.from_ndarray(s.rgb(i), format="rgb24")
            for p in st.encode(f):
                c.mux(p)
        for p in st.encode(None):
            c.mux(p)


def test_devibench_on_a_clip_made_here(tmp_path: Path) -> None:
    videos = tmp_path / "videos"
    videos.mkdir()
    _clip(videos / "sample_1.mp4")
    qs = [q.__class__(**{**q.__dict__, "sample_folder": "sample_1", "start_s": 1.0})
          for q in builtin_questions("builtin:document", 1280, 720)[:6]]  # fmt: skip
    write_questions(tmp_path / "q.csv", qs)
    out = tmp_path / "answers.csv"
    res = run_cli("devibench", "--questions", str(tmp_path / "q.csv"), "--videos", str(videos),
                  "--bitrates", "0.8", "-o", str(out))  # fmt: skip
    assert res.returncode == 0, res.stderr
    table = pd.read_csv(out)
    assert len(table) == 6 and table.correct.mean() >= 0.8 and (table.frames == 4).all()
    missing = run_cli("devibench", "--questions", str(tmp_path / "q.csv"), "--videos",
                      str(tmp_path), "-o", str(out))  # fmt: skip
    assert missing.returncode == 2 and "1 video(s) missing" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_a_sweep_reports_and_plots_accuracy(run: str, tmp_path: Path) -> None:
    exp = tmp_path / "exp.yaml"
    exp.write_text(f"topology: {P2P}\nstream: {{source: roi, video: builtin:markers, width: 640, "
                   "height: 360, duration_s: 3, drain_s: 0.5, viewer: {enabled: true}}\n"
                   "grid: {stream.roi.enabled: [false, true]}\n")  # fmt: skip
    out = tmp_path / "res"
    res = run_cli("run", str(exp), "-o", str(out), "--name", run)
    assert res.returncode == 0, res.stderr
    rep = run_cli("report", str(out), "--accuracy")
    assert rep.returncode == 0, rep.stderr
    assert "builtin:markers" in rep.stdout and "90% of top accuracy" in rep.stdout, rep.stdout
    fig = run_cli("plot", str(out), "--accuracy", "-o", str(tmp_path / "acc.pdf"))
    assert fig.returncode == 0 and (tmp_path / "acc.png").exists(), fig.stderr
