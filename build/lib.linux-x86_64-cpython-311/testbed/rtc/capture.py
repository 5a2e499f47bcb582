"""Wire captures: tcpdump with nanosecond kernel timestamps on a host's interface, and a lean
pcap parser that reads the RTP headers SRTP leaves in clear."""

from __future__ import annotations

import select
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from testbed.errors import TestbedError, UnavailableError
from testbed.net.network import Network
from testbed.procstat import exit_words

SNAPLEN = 256  # IP + UDP + RTP header, extensions and the first payload bytes (RTX, FEC headers)
PCAP_NANO_MAGIC = 0xA1B23C4D
PCAP_MICRO_MAGIC = 0xA1B2C3D4

# one row per IPv4 packet: t_real_ns, src_ip, dst_ip, ip_bytes, kind, pt, marker, seq, ts, ssrc,
# src port, dst port (0 for other protocols)
Row = tuple[int, str, str, int, str, int, int, int, int, int, int, int]


class Capture:
    """tcpdump in a host of the network, recorded in its ledger, started and ended by us."""

    def __init__(self, net: Network, host: str, ifname: str, path: Path) -> None:
        if shutil.which("tcpdump") is None:
            raise UnavailableError("tcpdump is not installed; run `make setup`")
        self.path = path
        self.host = host
        self.ended_early: str | None = None  # how tcpdump ended if it did before stop()
        cmd = ["tcpdump", "-i", ifname, "-n", "-s", str(SNAPLEN), "-U", "--immediate-mode", "-Z", "root",
               "--time-stamp-precision=nano", "-w", str(path), "ip"]  # fmt: skip
        self.proc = net.popen(host, cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        """tcpdump says 'listening on' once its socket is capturing."""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout_s
        seen = b""
        while b"listening on" not in seen:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stderr], [], [], left)[0]:
                raise TestbedError(f"tcpdump did not start: {_one_line(seen)}")
            chunk = self.proc.stderr.read1(4096)  # type: ignore[attr-defined]
            if not chunk:
                how = exit_words(self.proc.wait())
                said = _one_line(seen + self.proc.stderr.read())
                raise TestbedError(f"the capture in {self.host} (tcpdump pid {self.proc.pid}) {how} "
                                   "before it started" + (f": {said}" if said else ""))  # fmt: skip
            seen += chunk

    def stop(self) -> str:
        """End tcpdump (SIGTERM flushes the file); returns its closing statistics. A tcpdump
        that ended by itself is noted in ended_early: its file misses the end of the session."""
        returncode = self.proc.poll()
        if returncode is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        said = bytes(err or b"").decode(errors="replace").strip()
        if returncode is not None:
            why = [ln.strip() for ln in said.splitlines() if ln.startswith("tcpdump:")][-1:]
            self.ended_early = (f"the capture in {self.host} (tcpdump pid {self.proc.pid}) "
                                f"{exit_words(returncode)}" + (f" ({why[0]})" if why else ""))  # fmt: skip
        return said


def _one_line(text: bytes) -> str:
    return " | ".join(text.decode(errors="replace").strip().splitlines())[-300:]


def _ip(b: bytes) -> str:
    return ".".join(str(x) for x in b)


def classify(payload: bytes) -> tuple[str, int, int, int, int, int]:
    """(kind, pt, marker, seq, ts, ssrc) of a UDP payload: rtp, rtcp, stun, dtls or other."""
    if len(payload) >= 12 and 128 <= payload[0] <= 191:
        if 192 <= payload[1] <= 223:
            return "rtcp", payload[1], 0, 0, 0, 0
        seq, ts, ssrc = struct.unpack_from("!HII", payload, 2)
        return "rtp", payload[1] & 0x7F, payload[1] >> 7, seq, ts, ssrc
    if payload and payload[0] <= 3:
        return "stun", 0, 0, 0, 0, 0
    if payload and 20 <= payload[0] <= 63:
        return "dtls", 0, 0, 0, 0, 0
    return "other", 0, 0, 0, 0, 0


def udp_datagrams(path: Path) -> Iterator[tuple[int, str, str, int, int, bytes, int, int]]:
    """(t_real_ns, src, dst, ip_bytes, ip proto, UDP payload as captured, src port, dst port)
    per IPv4 packet of an Ethernet pcap (payload empty and ports 0 for other protocols; the
    payload is cut at the snap length)."""
    data = path.read_bytes()
    if len(data) < 24:
        return
    magic = struct.unpack_from("<I", data)[0]
    if magic not in (PCAP_NANO_MAGIC, PCAP_MICRO_MAGIC):
        raise TestbedError(f"{path}: not a little-endian pcap file")
    scale = 1 if magic == PCAP_NANO_MAGIC else 1000
    linktype = struct.unpack_from("<I", data, 20)[0]
    if linktype != 1:
        raise TestbedError(f"{path}: link type {linktype}, expected Ethernet")
    off = 24
    n = len(data)
    while off + 16 <= n:
        sec, frac, incl, _orig = struct.unpack_from("<IIII", data, off)
        off += 16
        frame = data[off : off + incl]
        off += incl
        if len(frame) < 14 + 20 or frame[12:14] != b"\x08\x00":
            continue
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        total = struct.unpack_from("!H", ip, 2)[0]
        udp = ip[9] == 17 and len(ip) >= ihl + 8
        payload = ip[ihl + 8 :] if udp else b""
        sport, dport = struct.unpack_from("!HH", ip, ihl) if udp else (0, 0)
        yield (sec * 1_000_000_000 + frac * scale, _ip(ip[12:16]), _ip(ip[16:20]), total, ip[9],
               payload, sport, dport)  # fmt: skip


def read_pcap(path: Path) -> list[Row]:
    """Parse an Ethernet pcap of IPv4 packets; times in CLOCK_REALTIME ns."""
    rows: list[Row] = []
    for t, src, dst, total, proto, payload, sport, dport in udp_datagrams(path):
        if proto == 17:
            kind, pt, marker, seq, ts, ssrc = classify(payload)
        else:
            kind, pt, marker, seq, ts, ssrc = ("icmp" if proto == 1 else "other"), 0, 0, 0, 0, 0
        rows.append((t, src, dst, total, kind, pt, marker, seq, ts, ssrc, sport, dport))
    return rows


def to_frame(rows: list[Row], offset_ns: int) -> Any:
    """Rows as a DataFrame with t_ns in CLOCK_MONOTONIC (t_real - offset)."""
    import pandas as pd

    cols = ["t_ns", "src", "dst", "ip_bytes", "kind", "pt", "marker", "seq", "ts", "ssrc",
            "sport", "dport"]  # fmt: skip
    df = pd.DataFrame(rows, columns=cols)
    df["t_ns"] = df["t_ns"].astype("int64") - offset_ns
    return df
