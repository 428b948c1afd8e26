"""Streaming conversion of mono 16-bit PCM at any rate to the 16 kHz the wake word wants.

microWakeWord and pymicro-vad take 16 kHz only, while a USB microphone gives 44.1 or
48 kHz. soxr resamples chunk by chunk with its filter state carried over, so chunk borders
leave no clicks and nothing is resampled by hand.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import soxr  # type: ignore[import-untyped]

from agent.audio import AudioChunk

__all__ = ["RATE", "Resampler"]

RATE: Final = 16000
"""The rate of everything after the resampler: wake word, voice activity, the command's audio."""


class Resampler:
    """Turns :class:`AudioChunk` of any rate into 16 kHz PCM; a stream whose rate changes
    (a folder of WAVs at different rates) starts a new soxr stream."""

    def __init__(self, quality: str = "HQ") -> None:
        self.quality = quality
        self._rate = 0
        self._stream: soxr.ResampleStream | None = None

    def process(self, chunk: AudioChunk) -> bytes:
        """``chunk`` at 16 kHz (soxr holds back its filter's delay until :meth:`flush`)."""
        if chunk.rate == RATE:
            return chunk.pcm
        if chunk.rate != self._rate or self._stream is None:
            self._rate = chunk.rate
            self._stream = soxr.ResampleStream(
                chunk.rate, RATE, 1, dtype="int16", quality=self.quality
            )
        samples = np.frombuffer(chunk.pcm, dtype="<i2")
        out = self._stream.resample_chunk(samples)
        return np.asarray(out, dtype="<i2").tobytes()

    def flush(self) -> bytes:
        """The rest of the stream in progress (its filter's delay), at its end."""
        stream, self._stream, self._rate = self._stream, None, 0
        if stream is None:
            return b""
        out = stream.resample_chunk(np.zeros(0, dtype="<i2"), last=True)
        return np.asarray(out, dtype="<i2").tobytes()
