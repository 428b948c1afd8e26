"""Word vectors for the student: each word of a lexicon with MiniLM's embedding of it alone.

The hashed n-grams know each training word apart from the others; a sentence encoder
knows that "lamp" is near "light" and "alarm" near "wake me". Beside its n-grams the
student sees the mean of its sentence's word vectors (times a weight) through a trained
projection. At export the projection is folded into one first-layer row per lexicon word
(:func:`fold`), so the runtime gathers a word's row as it gathers an n-gram's bucket: no
second input, no MiniLM and no vector table on the Pi. Experiment #26 in bench/README.md:
HWU64 +0.7 to +1.0 point.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

import numpy as np

from agent.featurize import FeaturizerConfig, tokenize

Embed = Callable[[list[str]], np.ndarray]
"""Texts -> ``[len(texts), width]`` float32 vectors (``MiniLMTeacher.embed``)."""


@dataclass(frozen=True)
class Lexicon:
    """Words, their vectors (``[len(words), width]`` float32) and the weight of their mean."""

    words: tuple[str, ...]
    vectors: np.ndarray
    weight: float

    @property
    def width(self) -> int:
        return int(self.vectors.shape[1])

    def features(self, texts: list[str]) -> np.ndarray:
        """``[len(texts), width]``: ``weight`` times the mean vector of each text's lexicon
        words (repeats counted, as the featurizer counts them); zeros for a text with none."""
        index = {word: row for row, word in enumerate(self.words)}
        out = np.zeros((len(texts), self.width), np.float32)
        for row, text in enumerate(texts):
            rows = [index[w] for w in tokenize(text) if w in index]
            if rows:
                out[row] = self.weight * self.vectors[rows].mean(axis=0)
        return out

    def featurizer(self, base: FeaturizerConfig) -> FeaturizerConfig:
        """``base`` with this lexicon: what the runtime needs to emit the words' rows."""
        return replace(base, lexicon=self.words, lexicon_weight=self.weight)


def vocabulary(texts: Iterable[str]) -> list[str]:
    """The distinct words of ``texts``, sorted (a lexicon's words, reproducibly ordered)."""
    words: set[str] = set()
    for text in texts:
        words.update(tokenize(text))
    return sorted(words)


def encode(words: list[str], embed: Embed, weight: float = 2.0) -> Lexicon:
    """The lexicon of ``words``, each embedded alone by ``embed``."""
    vectors = np.asarray(embed(words), np.float32) if words else np.zeros((0, 1), np.float32)
    return Lexicon(tuple(words), vectors, weight)


def fold(kernel: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """A first-layer kernel trained on ``[n-grams, lexicon features]`` as the runtime gathers
    it: the n-gram rows, then one row per lexicon word (its vector times the projection)."""
    width = vectors.shape[1]
    return np.vstack([kernel[:-width], vectors @ kernel[-width:]]).astype(kernel.dtype)
