"""Babble noise and mixing at a measured signal-to-noise ratio, for bench/listening.py.

Babble is several Korean chatter sentences spoken at once by different espeak-ng voices
(a room with a TV and people talking). Speech is mixed with it in numpy: the speech's power
is measured over its voiced part (espeak's leading and trailing silence trimmed), the
babble is scaled to sit ``snr`` dB below it, and the ratio actually reached is kept.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from bench.chatter import RATE, Voice, sentences, speak

TALKERS = (
    Voice("ko", 175, 50),
    Voice("ko+f3", 160, 75),
    Voice("ko+m3", 190, 35),
    Voice("ko+f2", 170, 60),
)
"""The overlapped voices of the babble."""
QUIET = 0.02
"""Samples below this share of the peak count as silence when trimming speech."""


@dataclass(frozen=True)
class Noise:
    """Babble scaled against a speech signal, and the SNR it has against it, in dB."""

    samples: np.ndarray
    snr: float


def babble(seconds: float, seed: int = 0, talkers: tuple[Voice, ...] = TALKERS) -> np.ndarray:
    """``seconds`` of overlapped chatter as float32 samples: each talker says seeded corpus
    sentences back to back, starting at a seeded offset, and the talkers are summed."""
    rng = random.Random(seed)
    corpus = sentences()
    length = int(seconds * RATE)
    total = np.zeros(length, np.float32)
    for voice in talkers:
        track = [np.zeros(rng.randrange(RATE), np.int16)]
        filled = len(track[0])
        while filled < length:
            speech = trim(speak(rng.choice(corpus), voice))
            track.append(speech)
            filled += len(speech)
        total += np.concatenate(track)[:length].astype(np.float32)
    return total


def trim(samples: np.ndarray, quiet: float = QUIET) -> np.ndarray:
    """``samples`` without the leading and trailing silence (below ``quiet`` of the peak)."""
    level = np.abs(samples.astype(np.float32))
    loud = np.flatnonzero(level > quiet * level.max()) if level.size and level.max() else []
    if len(loud) == 0:
        return samples[:0]
    return samples[loud[0] : loud[-1] + 1]


def power(samples: np.ndarray) -> float:
    """Mean square of ``samples``."""
    values = samples.astype(np.float64)
    return float(np.mean(values * values)) if values.size else 0.0


def scaled(reference: np.ndarray, noise: np.ndarray, snr: float) -> Noise:
    """``noise`` scaled to sit ``snr`` dB below the voiced part of ``reference``, with the
    ratio measured again on the result."""
    voiced = power(trim(reference))
    gain = np.sqrt(voiced / (power(noise) * 10 ** (snr / 10)))
    samples = (noise * gain).astype(np.float32)
    return Noise(samples, float(10 * np.log10(voiced / power(samples))))


def add(speech: np.ndarray, noise: np.ndarray, at: int = 0) -> np.ndarray:
    """int16 ``speech`` with float ``noise`` added from sample ``at`` on, clipped to int16."""
    total = speech.astype(np.float32)
    part = noise[: max(0, len(speech) - at)]
    total[at : at + len(part)] += part
    return np.clip(np.round(total), -32768, 32767).astype(np.int16)
