"""Wake word speech for the tests: espeak-ng's English "okay nabu" (which the bundled
okay_nabu model hears) before a Korean command, written as one WAV file.

espeak-ng ends every phrase with about 0.3 s of silence, so the wake word followed at once
by the command is "okay nabu, <command>" in one breath; ``pause`` adds silence between.
"""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import numpy as np
from speech import ESPEAK_RATE, synthesize

WAKE_WORD = "okay nabu"


def _samples(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as wav:
        assert (wav.getframerate(), wav.getnchannels()) == (ESPEAK_RATE, 1)
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")


def spoken(
    directory: Path,
    name: str,
    *parts: str | float,
    rate: int = ESPEAK_RATE,
    channels: int = 1,
) -> Path:
    """A WAV of ``parts`` in order: a string is said (``WAKE_WORD`` in English, anything
    else in Korean), a number is that many seconds of silence; converted by sox to
    ``rate`` Hz and ``channels`` channels."""
    pieces = [np.zeros(ESPEAK_RATE // 2, dtype="<i2")]
    for part in parts:
        if isinstance(part, str):
            voice = "en" if part == WAKE_WORD else "ko"
            pieces.append(_samples(synthesize(part, directory, voice=voice).path))
        else:
            pieces.append(np.zeros(int(part * ESPEAK_RATE), dtype="<i2"))
    pieces.append(np.zeros(ESPEAK_RATE, dtype="<i2"))
    native = directory / f"{name}-native.wav"
    with wave.open(str(native), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(ESPEAK_RATE)
        wav.writeframes(np.concatenate(pieces).tobytes())
    if rate == ESPEAK_RATE and channels == 1:
        return native
    path = directory / f"{name}.wav"
    command = ["sox", "-R", "-G", str(native), "-b", "16", "-r", str(rate), "-c", str(channels)]
    subprocess.run([*command, str(path)], check=True, capture_output=True)
    return path
