"""The endpoint record: what a sender or receiver process saw, in one stack-neutral schema.

Every stack's endpoint writes it (one Parquet file per table and an info.json, in the cell's
`sender/` or `receiver/` folder); the frame table, the session summary, the timeseries and
`bench floor` read it, never a stack's internals. It is identity, not timing: a time here is
when the stack's own code saw something (CLOCK_MONOTONIC ns); the wire captures stay the timing
authority for anything measured as latency.

Tables (columns below, in TABLES):
  sender   frames       every frame the source made (id, capture time, RTP timestamp, size...)
           packets      every RTP packet the sender sent: SSRC, sequence, RTP timestamp, kind
                        (media / rtx / fec / padding / audio) and which original an RTX or FEC one carries
           controller   the bitrate controller's targets as they changed (and what moved them)
           estimates    the sender's own per-frame latency estimates (per-frame feedback)
           roi_frames   the roi source's per-frame map and encoder figures (source: roi)
  receiver frames       what the receiver did with each frame: released by its jitter buffer,
                        decoded (with times, where the stack exposes them)
           feedback     NACK entries (one row per requested sequence number) and PLIs it sent
           recovered    media packets rebuilt from FEC
           drops        packets its jitter buffer discarded, and why
           packets_in   RTP packets as the stack's receive path saw them (hook time, not wire)
           intake       the frames the AI viewer took (testbed.viewer.intake)
           quality      PSNR of decoded frames (source: roi)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from testbed.errors import TestbedError
from testbed.files import parquet_bytes, write_atomic, write_json_atomic

SCHEMA_VERSION = 1
ROLES = ("sender", "receiver")
PACKET_KINDS = ("media", "rtx", "fec", "padding", "audio", "other")


@dataclass(frozen=True)
class Table:
    role: str
    name: str
    columns: tuple[tuple[str, str, str], ...]  # (name, pandas dtype, meaning)

    @property
    def names(self) -> list[str]:
        return [c for c, _, _ in self.columns]

    def frame(self, rows: Iterable[Sequence[Any]]) -> pd.DataFrame:
        """Rows (tuples in column order) as a DataFrame of this table's dtypes."""
        df = pd.DataFrame(list(rows), columns=self.names)
        return self.conform(df)

    def conform(self, df: pd.DataFrame) -> pd.DataFrame:
        missing = [c for c in self.names if c not in df]
        if missing:
            raise TestbedError(f"endpoint record {self.role}/{self.name}: no column {missing}")
        out = df[self.names].copy()
        for name, dtype, _ in self.columns:
            if dtype == "bytes":
                continue
            if dtype in ("int64", "bool") and out[name].isna().any():
                raise TestbedError(f"endpoint record {self.role}/{self.name}.{name}: null values")
            out[name] = out[name].astype(dtype)
        return out


def _t(role: str, name: str, *columns: tuple[str, str, str]) -> Table:
    return Table(role, name, columns)


T_NS = ("t_ns", "int64", "CLOCK_MONOTONIC ns when the stack's code saw it")
TABLES: dict[tuple[str, str], Table] = {
    (t.role, t.name): t
    for t in (
        _t("sender", "frames",
           ("frame_id", "int64", "index at the source: 0, 1, ..."),
           ("capture_ns", "int64", "when the source produced it"),
           ("rtp_ts", "Int64", "its RTP timestamp on the wire (null: the stack never sent it)"),
           ("size_bytes", "int64", "payload bytes (encoded sources); 0 for pictures the stack encodes"),
           ("keyframe", "bool", "a key frame, as the source made it"),
           ("target_bitrate_bps", "float64", "the controller's target when it was captured")),
        _t("sender", "packets", T_NS,
           ("kind", "string", "media | rtx | fec | padding | other"),
           ("ssrc", "int64", "RTP SSRC"), ("seq", "int64", "RTP sequence number"),
           ("rtp_ts", "int64", "RTP timestamp"), ("pt", "int64", "payload type"),
           ("marker", "bool", "RTP marker bit"),
           ("original_seq", "Int64", "rtx: the original's sequence number; fec: the first media packet its block protects"),
           ("protected", "Int64", "fec: media packets its block protects, from original_seq"),
           ("mask", "Int64", "fec with a mask (ULPFEC, FlexFEC): bit i set = protects original_seq + i; null: the `protected` packets from original_seq, any k of the block rebuild it")),
        _t("sender", "controller", T_NS,
           ("feedback", "string", "what the controller was answering: report, remb, nack, frame, tick"),
           ("target_bps", "float64", "its target from then on (the session's budget)"),
           ("applied_bps", "float64", "what was asked of the video: the target less the audio's share, at least the source's floor"),
           ("stack_bps", "float64", "the stack's answer: Chromium's maxBitrate read back after setParameters (null on aiortc, whose encoder takes the value as given)"),
           ("estimate_bps", "float64", "the stack's estimate the event carried (remb; null otherwise)"),
           ("rtt_ms", "float64", "the RTT the event carried (null: none)"),
           ("loss_fraction", "float64", "the loss fraction the event carried (report; null otherwise)"),
           ("age_ms", "float64", "how old the event's figures were when the controller got them"),
           ("max_fps", "float64", "the controller's frame-rate limit (null: none)"),
           ("scale_down", "float64", "its resolution divisor (null: full resolution)"),
           ("stack_fps", "float64", "Chromium: maxFramerate read back (null on aiortc or when unset)"),
           ("stack_scale", "float64", "Chromium: scaleResolutionDownBy read back (null on aiortc or when unset)")),
        _t("sender", "rates", T_NS,
           ("target_bps", "float64", "the encoder's target the stack reports (null: none)"),
           ("available_bps", "float64", "the available outgoing bitrate its estimator reports (null: none)"),
           ("sent_bps", "float64", "RTP bytes it sent over the last interval, as bits per second"),
           ("frames_encoded", "int64", "frames encoded so far"),
           ("rtt_ms", "float64", "the round-trip time it measured (null: none)")),
        _t("sender", "estimates",
           ("rtp_ts", "int64", "the frame"),
           ("latency_ms", "float64", "the sender's estimate from per-frame feedback (null until an RTT is known)")),
        _t("sender", "roi_frames",
           ("frame_id", "int64", "the frame"), ("roi_mean_delta_qp", "float64", "mean delta QP"),
           ("roi_share_max_qp", "float64", "share at QP 51"), ("roi_rects", "int64", "addroi rectangles"),
           ("scorer_ms", "float64", "scorer time of a map that became current here"),
           ("encode_ms", "float64", "encoder time"), ("roi_map_age", "float64", "map age, frames")),
        _t("receiver", "frames", T_NS,
           ("rtp_ts", "int64", "the frame's RTP timestamp"),
           ("event", "string", "assembled (from its packets) | released (by the jitter buffer) | decoded | dropped"),
           ("size_bytes", "Int64", "bytes released (null where the stack does not say)")),
        _t("receiver", "feedback", T_NS,
           ("kind", "string", "nack | pli | fir"),
           ("seq", "Int64", "nack: one requested sequence number per row")),
        _t("receiver", "recovered", T_NS,
           ("seq", "int64", "media sequence number rebuilt"), ("rtp_ts", "int64", "its frame")),
        _t("receiver", "drops", T_NS,
           ("reason", "string", "stale | reset | overflow (what the jitter buffer did)"),
           ("seq", "int64", "the packet's sequence number")),
        _t("receiver", "packets_in", T_NS,
           ("kind", "string", "media | rtx | fec | other"), ("pt", "int64", "payload type"),
           ("seq", "int64", "sequence number"), ("rtp_ts", "int64", "RTP timestamp")),
        _t("receiver", "intake", T_NS,
           ("rtp_ts", "int64", "the decoded frame the AI viewer took (t_ns: when it was decoded)"),
           ("slot", "int64", "its 1/viewer.fps slot of media time"),
           ("file", "string", "the frame as the model sees it (PNG, relative to the cell)"),
           ("width", "int64", "after the model's resize"), ("height", "int64", "after the resize")),
        _t("receiver", "quality",
           ("frame_id", "int64", "the frame"), ("psnr_db", "float64", "luma PSNR, whole frame"),
           ("psnr_roi_db", "float64", "inside the relevant region"),
           ("psnr_bg_db", "float64", "outside it")),
    )
}  # fmt: skip


def table(role: str, name: str) -> Table:
    return TABLES[(role, name)]


@dataclass
class EndpointRecord:
    """One endpoint's record: its tables (all of its role's, empty where nothing happened) and
    `info`: scalars (stack, CPU, counters, negotiated payload types, controller summary)."""

    role: str
    stack: str
    info: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role {self.role!r}: valid: {', '.join(ROLES)}")
        for (role, name), t in TABLES.items():
            if role == self.role:
                df = self.tables.get(name)
                self.tables[name] = t.frame([]) if df is None else t.conform(df)
        unknown = set(self.tables) - {n for r, n in TABLES if r == self.role}
        if unknown:
            raise ValueError(f"{self.role} record: unknown tables {sorted(unknown)}")

    def __getitem__(self, name: str) -> pd.DataFrame:
        return self.tables[name]

    def write(self, cell: Path) -> Path:
        folder = cell / self.role
        folder.mkdir(parents=True, exist_ok=True)
        for name, df in self.tables.items():
            write_atomic(folder / f"{name}.parquet", parquet_bytes(df))
        meta = {"schema": SCHEMA_VERSION, "role": self.role, "stack": self.stack, "info": self.info}
        write_json_atomic(folder / "info.json", meta)
        return folder

    @classmethod
    def read(cls, cell: Path, role: str) -> EndpointRecord:
        folder = cell / role
        try:
            meta = json.loads((folder / "info.json").read_text())
        except (OSError, ValueError) as e:
            raise TestbedError(
                f"{folder}: no readable endpoint record ({e}); did the {role} process finish?"
            ) from None
        if meta.get("schema") != SCHEMA_VERSION or meta.get("role") != role:
            raise TestbedError(f"{folder}/info.json: record schema {meta.get('schema')} "
                               f"(role {meta.get('role')}), expected {SCHEMA_VERSION} ({role})")  # fmt: skip
        tables = {
            name: pd.read_parquet(folder / f"{name}.parquet")
            for r, name in TABLES
            if r == role and (folder / f"{name}.parquet").exists()
        }
        return cls(role, str(meta["stack"]), dict(meta.get("info") or {}), tables)
