"""The receiver's half: rebuilds lost media packets, and holds back NACKs FEC may make moot.

Pure, time-injected. A block is known once one of its repair packets arrives (repair packets
follow their frame's media). NACK policy "retransmit only what FEC could not recover": a NACK
for a packet that FEC may still rebuild is deferred until its block is concluded (all repair
packets in, or a later frame's media or a later block's repair arrived: no reordering on the
path means the rest was lost) or nack_wait_ms passed, whichever is first.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from dataclasses import dataclass, field

from testbed.fec import codec
from testbed.seqnum import U16, after

MEDIA_WINDOW = 4096  # media packets kept for decoding


@dataclass
class Block:
    head: codec.RepairHeader
    ts: int
    repairs: dict[int, bytes] = field(default_factory=dict)
    done: bool = False
    concluded: bool = False

    def key(self) -> tuple[str, int, int, int]:
        """Block ids wrap after 65536 blocks: a block is also its scheme, first_seq, k and m."""
        return (self.head.scheme, self.head.first_seq, self.head.k, self.head.m)

    def seqs(self) -> list[int]:
        return [(self.head.first_seq + i) % U16 for i in range(self.head.k)]

    def covers(self, seq: int) -> bool:
        return (seq - self.head.first_seq) % U16 < self.head.k


@dataclass
class FecReceiver:
    nack_wait_ns: int
    media: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    blocks: OrderedDict[int, Block] = field(default_factory=OrderedDict)
    recovered: list[tuple[int, int, int]] = field(default_factory=list)  # now_ns, seq, ts
    deferred: dict[int, int] = field(default_factory=dict)  # seq -> deferred at ns
    nacks_saved: int = 0  # NACK entries not sent because FEC rebuilt the packet
    malformed: int = 0  # repair blocks that contradict the media (a hostile or broken packet)

    def on_media(self, seq: int, ts: int, packet: bytes, now_ns: int) -> list[bytes]:
        """A media packet arrived (original or rebuilt): returns packets it lets us rebuild."""
        self.media[seq] = packet
        self.media.move_to_end(seq)
        while len(self.media) > MEDIA_WINDOW:
            self.media.popitem(last=False)
        self.deferred.pop(seq, None)
        out: list[bytes] = []
        for b in self.blocks.values():
            if b.ts != ts and not b.concluded and after(seq, b.seqs()[-1]):
                b.concluded = True  # a later frame's media: this block's repairs are all in
            if b.covers(seq) and not b.done:
                out += self._try(b, now_ns)
        return out

    def on_repair(self, payload: bytes, ts: int, now_ns: int) -> list[bytes]:
        parsed = codec.RepairHeader.unpack(payload)
        if parsed is None:
            return []
        head, symbol = parsed
        block = self.blocks.get(head.block_id)
        if block is None or block.key() != (head.scheme, head.first_seq, head.k, head.m):
            block = Block(head=head, ts=ts)
            self.blocks[head.block_id] = block
            while len(self.blocks) > 256:
                self.blocks.popitem(last=False)
        for other in self.blocks.values():  # an earlier block: its repairs are all in
            if other is not block and after(head.block_id, other.head.block_id):
                other.concluded = True
        block.repairs[head.index] = symbol
        if len(block.repairs) == head.m:
            block.concluded = True
        return self._try(block, now_ns) if not block.done else []

    def _try(self, b: Block, now_ns: int) -> list[bytes]:
        seqs = b.seqs()
        have = {i: s for i, s in enumerate(seqs) if s in self.media}
        if len(have) == b.head.k:
            b.done = True
            return []
        if len(have) + len(b.repairs) < b.head.k:
            return []
        b.done = True
        packets = [self.media[s] for s in have.values()]
        if any(len(p) + 2 > b.head.symbol_len for p in packets):
            self.malformed += 1  # its symbols cannot hold the media it says it protects
            return []
        media = codec.to_symbols_sized(packets, b.head.symbol_len)
        try:
            rebuilt = codec.decode(
                b.head.scheme, b.head.k, b.head.m, dict(zip(have, media, strict=True)), b.repairs
            )
        except Exception:  # zfec refuses inconsistent blocks in its own ways: count, drop
            self.malformed += 1
            return []
        out = []
        for i, symbol in sorted(rebuilt.items()):
            packet = codec.from_symbol(symbol)
            if packet is None or len(packet) < 12:
                continue
            seq = struct.unpack_from("!H", packet, 2)[0]
            if seq != seqs[i]:
                continue  # not what the block said: never inject a wrong packet
            self.media[seq] = packet
            if self.deferred.pop(seq, None) is not None:
                self.nacks_saved += 1
            self.recovered.append((now_ns, seq, b.ts))
            out.append(packet)
        return out

    # --- NACK deferral -------------------------------------------------------------------

    def _pending(self, seq: int) -> bool:
        """Could FEC still rebuild this packet?"""
        for b in self.blocks.values():
            if b.covers(seq):
                return not b.concluded and not b.done
        # no repair seen for it yet: its block may still come, unless a later block already did
        return not any(after(b.head.first_seq, seq) for b in self.blocks.values())

    def filter_nack(self, seqs: list[int], now_ns: int) -> list[int]:
        """What to NACK now; the rest waits for FEC (see due_nacks)."""
        now_list = []
        for seq in seqs:
            if seq in self.media:
                self.nacks_saved += 1
            elif seq in self.deferred or self._pending(seq):
                self.deferred.setdefault(seq, now_ns)
            else:
                now_list.append(seq)
        return now_list

    def due_nacks(self, now_ns: int) -> list[int]:
        """Deferred packets FEC did not rebuild and whose wait is over."""
        due = [s for s, t in self.deferred.items()
               if now_ns - t >= self.nack_wait_ns or not self._pending(s)]  # fmt: skip
        for s in due:
            del self.deferred[s]
        return sorted(due)
