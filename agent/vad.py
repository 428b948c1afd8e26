"""Voice activity: is someone speaking in each 10 ms of 16 kHz audio (pymicro-vad)?

The listening loop asks it where a command ends. pymicro-vad is a small neural network
from the microWakeWord family; it needs about 0.75 s of audio before its first answer and
keeps saying "speech" for about 0.6 s after speech stops (measured on espeak-ng speech),
so the loop warms it up on the audio before the wake word and counts a pause from its
answers, not from the signal's level.
"""

from __future__ import annotations

from typing import Final

from agent.resample import RATE

__all__ = ["FRAME_BYTES", "THRESHOLD", "VoiceActivity"]

FRAME_BYTES: Final = 2 * RATE // 100
"""10 ms of 16-bit samples at 16 kHz."""
THRESHOLD: Final = 0.5
"""Speech probability above which a frame is speech (pymicro-vad's own example's value)."""


class VoiceActivity:
    """Speech or not, frame by frame; audio not filling a frame waits for the next call.

    Not thread-safe: one per audio stream.
    """

    def __init__(self, threshold: float = THRESHOLD) -> None:
        from pymicro_vad import MicroVad

        self.threshold = threshold
        self._vad = MicroVad()
        self._pending = b""

    def process(self, pcm: bytes) -> list[bool]:
        """Whether each complete 10 ms frame of ``pcm`` (with what was left over before) is
        speech; frames before the detector has heard enough count as speech, so that they
        never end a command."""
        pcm = self._pending + pcm
        usable = len(pcm) - len(pcm) % FRAME_BYTES
        self._pending = pcm[usable:]
        flags = []
        for start in range(0, usable, FRAME_BYTES):
            probability = self._vad.process_10ms(pcm[start : start + FRAME_BYTES])
            flags.append(probability < 0 or probability > self.threshold)
        return flags

    def reset(self) -> None:
        """Forget everything heard (a new stream)."""
        self._vad.reset()
        self._pending = b""
