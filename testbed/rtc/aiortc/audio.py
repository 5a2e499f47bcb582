"""The aiortc sender's voice: a paced 48 kHz tone as an audio track, and Opus at a constant
bitrate (aiortc's encoder is VBR at 96 kbps; testbed.rtc.aiortc.compat.set_opus_bitrate)."""

from __future__ import annotations

import asyncio
import fractions
import time

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

RATE = 48_000
TONE_HZ = 440.0


class ToneTrack(MediaStreamTrack):
    """ptime_ms of a tone with a little noise per frame (a voice-like load for the encoder),
    paced on the monotonic clock, for duration_s, none inside a pause; then it ends."""

    kind = "audio"

    def __init__(self, ptime_ms: int, duration_s: float,
                 pauses: tuple[tuple[float, float], ...] = (), seed: int = 0) -> None:  # fmt: skip
        super().__init__()
        self.samples = RATE * ptime_ms // 1000
        self.ptime_s = ptime_ms / 1000
        self.frames = int(duration_s * 1000 / ptime_ms)
        self.pauses = pauses
        self.sent = 0
        self.start_ns: int | None = None
        self.rng = np.random.default_rng(seed)

    async def recv(self) -> av.AudioFrame:
        while any(a <= self.sent * self.ptime_s < b for a, b in self.pauses):
            self.sent += 1  # silent: no packet (aiortc sends a packet per frame it is given)
        if self.readyState != "live" or self.sent >= self.frames:
            self.stop()
            raise MediaStreamError
        if self.start_ns is None:
            self.start_ns = time.monotonic_ns()
        due = self.start_ns + self.sent * self.samples * 1_000_000_000 // RATE
        wait = (due - time.monotonic_ns()) / 1e9
        if wait > 0:
            await asyncio.sleep(wait)
        n = np.arange(self.sent * self.samples, (self.sent + 1) * self.samples)
        wave = 0.3 * np.sin(2 * np.pi * TONE_HZ * n / RATE) + 0.05 * self.rng.standard_normal(
            n.size
        )
        pcm = (np.clip(wave, -1, 1) * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = self.sent * self.samples
        frame.time_base = fractions.Fraction(1, RATE)
        self.sent += 1
        return frame
