"""DeViBench, run here: its questions against StreamingBench's videos, which users bring.

Each question is about the 5 s of its video from start_time. The segment is cut (decoded,
resized to width x height, kept losslessly as FFV1), then encoded offline at each bitrate,
uniform or with ROI (testbed.viewer.offline), sampled and resized as a model takes it, and
answered by the judge. Offline means: the encoder's effect, without a link's loss or delay;
stream a segment through `testbed stream --source roi --stream-set video=SEGMENT` for those.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import av
import pandas as pd

from testbed.errors import ConfigError
from testbed.roi.offline import Clip
from testbed.roi.regions import Box, Regions
from testbed.roi.spec import RoiSpec
from testbed.viewer.judges import make_judge
from testbed.viewer.judging import wilson
from testbed.viewer.offline import Encodings, evaluate
from testbed.viewer.questions import SEGMENT_S, Question, load_questions
from testbed.viewer.spec import ViewerSpec

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")
FPS = 30.0
Say = Callable[[str], None]


def find_video(videos: Path, sample: str) -> Path | None:
    for suffix in VIDEO_SUFFIXES:
        if (videos / f"{sample}{suffix}").is_file():
            return videos / f"{sample}{suffix}"
    folder = videos / sample
    if folder.is_dir():
        found = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
        if found:
            return found[0]
    return None


def cut_segment(video: Path, start_s: float, width: int, height: int, out: Path,
                seconds: float = SEGMENT_S) -> int:  # fmt: skip
    """Decode [start_s, start_s + seconds) at FPS, resized, into a lossless FFV1 file; frames."""
    n = 0
    with av.open(str(video)) as src, av.open(str(out), "w") as dst:
        stream = dst.add_stream("ffv1", rate=int(FPS))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        vin = src.streams.video[0]
        if start_s > 0 and vin.time_base is not None:
            src.seek(int(start_s / vin.time_base), stream=vin)
        next_t = start_s
        for frame in src.decode(vin):
            t = float(frame.time) if frame.time is not None else next_t
            if t < next_t - 0.5 / FPS:
                continue
            if t >= start_s + seconds or n >= round(seconds * FPS):
                break
            img = frame.reformat(width=width, height=height, format="yuv420p")
            img.pts = n
            for p in stream.encode(img):
                dst.mux(p)
            n += 1
            next_t = start_s + n / FPS
        for p in stream.encode(None):
            dst.mux(p)
    return n


@dataclass(frozen=True)
class DevibenchRun:
    """The questions (a DeViBench CSV; only these task types, the first `limit`), the videos
    they name, the bitrates and ROI scorers ("uniform" or a scorer) each segment is encoded
    with at width x height, and the judge that answers."""

    questions_path: Path
    videos: Path
    bitrates: Sequence[float]
    rois: Sequence[str]
    judge_name: str
    params: dict[str, Any] | None = None
    task_types: Sequence[str] = ()
    limit: int | None = None
    width: int = 640
    height: int = 480


def run_devibench(job: DevibenchRun, say: Say = lambda _: None) -> pd.DataFrame:
    from testbed.roi.spec import SCORERS

    questions_path, videos, bitrates, rois = job.questions_path, job.videos, job.bitrates, job.rois
    task_types, limit, width, height = job.task_types, job.limit, job.width, job.height

    questions = load_questions(questions_path)
    if task_types:
        questions = [q for q in questions if q.task_type in task_types]
    questions = questions[:limit] if limit else questions
    for r in rois:
        if r != "uniform" and r not in SCORERS:
            raise ConfigError("--roi", r, f"valid: uniform, {', '.join(SCORERS)}")
    unnamed = [q.qid for q in questions if not q.sample_folder]
    if unnamed:
        raise ConfigError(str(questions_path), "sample_folder", f"question {unnamed[0]} names no "
                          "video; DeViBench's questions name theirs in sample_folder")  # fmt: skip
    missing = sorted({q.sample_folder or "?" for q in questions
                      if not q.sample_folder or find_video(videos, q.sample_folder) is None})  # fmt: skip
    if missing:
        shown = ", ".join(missing[:8]) + (
            f" and {len(missing) - 8} more" if len(missing) > 8 else ""
        )
        raise ConfigError(str(videos), "", f"{len(missing)} video(s) missing for "
                          f"{questions_path.name}: {shown}; expected DIR/<sample_folder>.mp4 "
                          "or DIR/<sample_folder>/*.mp4 (StreamingBench's videos)")  # fmt: skip
    judge = make_judge(job.judge_name, job.params, "--judge")
    segments: dict[tuple[str, float], list[Question]] = {}
    for q in questions:
        segments.setdefault((q.sample_folder or "", q.start_s or 0.0), []).append(q)
    rows = []
    whole = Regions(width, height, (Box(0, 0, width, height, 1.0, 0, None),))
    with tempfile.TemporaryDirectory(prefix="tb-devibench-") as tmp:
        for (sample, start), qs in segments.items():
            path = Path(tmp) / f"{sample}-{start:g}.mkv"
            video = find_video(videos, sample)
            assert video is not None
            frames = cut_segment(video, start, width, height, path)
            if frames < FPS:
                say(f"{sample} @ {start:g} s: only {frames} frames; skipped")
                continue
            clip = Clip(str(path), width, height, FPS, frames, whole)
            for label in rois:
                scorer = "saliency" if label == "uniform" else label
                spec = RoiSpec(scorer=scorer, question=qs[0].question)
                points = evaluate(clip, [replace(q, start_s=None) for q in qs],
                                  Encodings(bitrates, spec, [label != "uniform"]), judge,
                                  ViewerSpec(enabled=True), skip=0)  # fmt: skip
                for p in points:
                    for a in p.answers.itertuples():
                        rows.append({"sample_folder": sample, "start_time": start, "roi": label,
                                     "bitrate_target_mbps": p.bitrate_target_mbps,
                                     "achieved_mbps": p.achieved_mbps, **a._asdict()})  # fmt: skip
            say(f"{sample} @ {start:g} s: {len(qs)} question(s) at {len(bitrates)} bitrate(s)")
    table = pd.DataFrame(rows).drop(columns=["Index"], errors="ignore")
    for (roi, bitrate, task), g in table.groupby(["roi", "bitrate_target_mbps", "task_type"]):
        k, n = int(g.correct.sum()), len(g)
        lo, hi = wilson(k, n)
        say(f"{roi:<9} {bitrate:>5g} Mbps  {task:<28} {k}/{n} = {k / n:.2f} [{lo:.2f}, {hi:.2f}]")
    return table
