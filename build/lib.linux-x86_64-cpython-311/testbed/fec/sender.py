"""The sender's half: collects a frame's media packets and makes its repair packets. Pure."""

from __future__ import annotations

import random
import struct
from dataclasses import dataclass, field

from testbed.fec import codec
from testbed.fec.spec import FecSpec, plan_blocks
from testbed.models.loss import WindowedLoss
from testbed.seqnum import U16


@dataclass(frozen=True)
class BlockRecord:
    """What the analysis needs to know about a block (the sender's record marks each repair
    packet with the block's first media seq and k)."""

    ts: int
    block_id: int
    first_seq: int
    k: int
    m: int
    repair_first_seq: int


@dataclass
class FecSender:
    """Feed it every plain media RTP packet in send order; on a frame's marker packet it returns
    the repair packets (plain RTP: own payload type and SSRC, the frame's RTP timestamp)."""

    spec: FecSpec
    payload_type: int
    ssrc: int = field(default_factory=lambda: random.getrandbits(32))
    seq: int = field(default_factory=lambda: random.getrandbits(16))
    block_id: int = 0
    loss_pct: float = 0.0  # what the sender heard (RTCP receiver reports; on_report); for `table`
    blocks: list[BlockRecord] = field(default_factory=list)
    _frame: list[tuple[int, bytes]] = field(default_factory=list)
    _ts: int | None = None

    def __post_init__(self) -> None:
        self._loss = WindowedLoss(self.spec.loss_window_s * 1000)

    def on_report(
        self, now_ms: float, fraction: float | None, lost: int | None, sent: int | None
    ) -> None:
        """A receiver report: the loss rate the `table` policy looks up, over loss_window_s."""
        if lost is not None and sent is not None:
            self._loss.add(now_ms, lost, sent)
        windowed = self._loss.pct() if self.spec.loss_window_s > 0 else None
        if windowed is not None:
            self.loss_pct = windowed
        elif fraction is not None:
            self.loss_pct = 100 * fraction

    def on_media(self, seq: int, ts: int, marker: bool, packet: bytes) -> list[bytes]:
        if self._ts is not None and ts != self._ts:
            self._frame = []  # a frame whose marker we never saw: leave it unprotected
        self._ts = ts
        self._frame.append((seq, packet))
        if not marker:
            return []
        frame, self._frame, self._ts = self._frame, [], None
        return self._protect(ts, frame)

    def _protect(self, ts: int, frame: list[tuple[int, bytes]]) -> list[bytes]:
        out: list[bytes] = []
        for start, k, m in plan_blocks(len(frame), self.spec, self.loss_pct):
            part = frame[start : start + k]
            symbols = codec.to_symbols([p for _, p in part])
            repairs = codec.encode(self.spec.scheme, symbols, m)
            self.blocks.append(BlockRecord(ts, self.block_id, part[0][0], k, m, self.seq))
            for index, symbol in enumerate(repairs):
                head = codec.RepairHeader(self.spec.scheme, self.block_id, part[0][0], k, m,
                                          index, len(symbol))  # fmt: skip
                rtp = struct.pack("!BBHII", 0x80, self.payload_type, self.seq, ts, self.ssrc)
                out.append(rtp + head.pack() + symbol)
                self.seq = (self.seq + 1) % U16
            self.block_id = (self.block_id + 1) % U16
        return out
