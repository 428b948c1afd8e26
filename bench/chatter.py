"""Continuous Korean chatter: bench/chatter-ko.txt spoken by espeak-ng into one long WAV.

The false-activation runs need an hour or more of ordinary speech that contains no command,
as a TV or a conversation in the room would produce. Each sentence is synthesized apart,
resampled to 16 kHz and joined to the next with a seeded pause of 0.3-1.5 s, so the same
voice and seed always give the same file. The WAVs are cached outside the repository
(``~/.cache/voice-agent-bench``, or ``$VOICE_AGENT_BENCH_CACHE``), keyed by the text, the
voice and the seed.

    python bench/chatter.py                  # the whole corpus, first voice; prints the path
    python bench/chatter.py --voice 1 --minutes 5
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import random
import subprocess
import sys
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CORPUS = Path(__file__).with_name("chatter-ko.txt")
RATE = 16000
"""Sample rate of the chatter WAVs (the wake detector's and Vosk's own rate)."""
PAUSE = (0.3, 1.5)
"""Bounds of the seeded pause between two sentences, in seconds."""


@dataclass(frozen=True)
class Voice:
    """One espeak-ng voice setting: a voice (with variant), words per minute and pitch."""

    voice: str = "ko"
    speed: int = 175
    pitch: int = 50

    @property
    def label(self) -> str:
        return f"{self.voice} {self.speed} wpm pitch {self.pitch}"


VOICES = (Voice("ko", 175, 50), Voice("ko+f3", 155, 70), Voice("ko+m3", 195, 35))
"""Voices for successive passes over the corpus: each pass is new audio of the same text."""


def cache_dir() -> Path:
    """Where synthesized bench audio is kept between runs (never inside the repository)."""
    override = os.environ.get("VOICE_AGENT_BENCH_CACHE")
    return Path(override) if override else Path.home() / ".cache" / "voice-agent-bench"


def sentences(path: Path = CORPUS) -> list[str]:
    """The corpus's sentences in file order, without comments and blank lines."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def speak(text: str, voice: Voice = Voice(), rate: int = RATE) -> np.ndarray:
    """``text`` said by espeak-ng as int16 mono samples at ``rate`` Hz."""
    import soxr

    command = ["espeak-ng", "-v", voice.voice, "-s", str(voice.speed), "-p", str(voice.pitch)]
    wav = subprocess.run([*command, "--stdout", text], check=True, capture_output=True).stdout
    with wave.open(io.BytesIO(wav)) as reader:
        native = reader.getframerate()
        # espeak's streamed header has no length; read what is there.
        samples = np.frombuffer(reader.readframes(reader.getnframes() or 1 << 30), np.int16)
    if native == rate:
        return samples.copy()
    resampled = soxr.resample(samples.astype(np.float32), native, rate)
    return np.clip(np.round(resampled), -32768, 32767).astype(np.int16)


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> None:
    """Write int16 mono ``samples`` as a 16-bit WAV, atomically (a temporary file, renamed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    with wave.open(str(partial), "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(samples.astype("<i2").tobytes())
    partial.replace(path)


def chatter_wav(
    voice: Voice = VOICES[0],
    minutes: float | None = None,
    seed: int = 0,
    texts: list[str] | None = None,
) -> Path:
    """A cached 16 kHz WAV of the corpus (or ``texts``) said by ``voice`` with seeded pauses.

    ``minutes`` stops after the sentence that reaches that length; None takes every sentence.
    """
    texts = sentences() if texts is None else texts
    key = hashlib.sha1(
        "\n".join([voice.label, str(seed), str(minutes), *texts]).encode()
    ).hexdigest()[:16]
    path = cache_dir() / f"chatter-{voice.voice.replace('+', '_')}-{key}.wav"
    if path.exists():
        return path
    rng = random.Random(seed)
    parts: list[np.ndarray] = []
    total = 0
    limit = None if minutes is None else int(minutes * 60 * RATE)
    for text in texts:
        pause = np.zeros(int(rng.uniform(*PAUSE) * RATE), np.int16)
        speech = speak(text, voice)
        parts += [speech, pause]
        total += len(speech) + len(pause)
        if limit is not None and total >= limit:
            break
    write_wav(path, np.concatenate(parts))
    return path


def wav_seconds(path: Path) -> float:
    """The length of a WAV file in seconds."""
    with wave.open(str(path)) as reader:
        return reader.getnframes() / reader.getframerate()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--voice", type=int, default=0, help=f"0-{len(VOICES) - 1}: {VOICES}")
    parser.add_argument("--minutes", type=float, default=None, help="stop after this length")
    parser.add_argument("--seed", type=int, default=0, help="seed of the pauses")
    args = parser.parse_args(argv)
    if not 0 <= args.voice < len(VOICES):
        print(f"--voice must be 0-{len(VOICES) - 1}", file=sys.stderr)
        return 2
    path = chatter_wav(VOICES[args.voice], args.minutes, args.seed)
    print(f"{path} ({wav_seconds(path) / 60:.1f} min, {VOICES[args.voice].label})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
