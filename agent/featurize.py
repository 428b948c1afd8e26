"""Turn an utterance into the model's input vector: hashed word and character n-grams.

Training (convert/) and the runtime (agent/) both call this module, so the two cannot
disagree on how a sentence becomes numbers. Pure Python and numpy, deterministic across
processes and machines (CRC-32, never Python's salted ``hash``), and Unicode-safe: text is
NFKC-normalized and case-folded, and ``\\w`` matches Hangul, Cyrillic, accented letters.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

_NON_WORD = re.compile(r"[\W_]+")
# "what's" and "kid’s" are one word to a recognizer; keep them one word here too.
_APOSTROPHE = re.compile(r"(?<=\w)['’](?=\w)")


@dataclass(frozen=True)
class FeaturizerConfig:
    """Settings that a model was trained with; stored in the model's metadata."""

    dim: int = 4096
    """Number of hash buckets, the length of the input vector."""
    word_ngrams: int = 2
    """Word n-grams from 1 up to this length (2 = unigrams and bigrams)."""
    char_min: int = 2
    char_max: int = 4
    """Character n-grams of each word (with ``<`` ``>`` boundary marks); 0 disables."""
    char_weight: float = 0.5
    """Weight of a character n-gram relative to a word n-gram."""

    def __post_init__(self) -> None:
        if self.dim < 16 or self.dim & (self.dim - 1):
            raise ValueError(f"featurizer dim must be a power of two >= 16, not {self.dim}")
        if self.word_ngrams < 1:
            raise ValueError("featurizer word_ngrams must be >= 1")
        if self.char_max and not 1 <= self.char_min <= self.char_max:
            raise ValueError("featurizer needs 1 <= char_min <= char_max (or char_max = 0)")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeaturizerConfig:
        return cls(**data)


def normalize(text: str) -> str:
    """Canonical form of a sentence: NFKC, case-folded, punctuation as single spaces."""
    if not text.isascii():  # NFKC leaves ASCII unchanged; skip it on the common path
        text = unicodedata.normalize("NFKC", text)
    folded = _APOSTROPHE.sub("", text.casefold())
    return " ".join(_NON_WORD.sub(" ", folded).split())


def tokenize(text: str) -> list[str]:
    """Words of a sentence, after :func:`normalize`."""
    return normalize(text).split()


class Featurizer:
    """Maps sentences to L2-normalized hashed n-gram vectors of ``config.dim`` floats."""

    def __init__(self, config: FeaturizerConfig) -> None:
        self.config = config
        self._mask = config.dim - 1
        # The features of a word (or word pair) never change, so each is hashed once; a
        # command vocabulary is small, and the cache is bounded for open-ended input. The
        # buckets and weights are kept as raw bytes: joining bytes and viewing the result
        # costs a fraction of concatenating dozens of small arrays.
        self._cache: dict[str, tuple[bytes, bytes]] = {}
        self._empty = (np.zeros(0, np.intp), np.zeros(0, np.float32))
        self._scratch = np.zeros(config.dim, np.float32)
        """All zeros between calls: the weights of repeated buckets are summed here."""
        self._last = np.zeros(config.dim, np.intp)
        """Scratch: position of a bucket's last occurrence in the current sentence."""
        self._positions = np.arange(1024, dtype=np.intp)

    def _hash(self, feature: str) -> int:
        return zlib.crc32(feature.encode("utf-8")) & self._mask

    def _unit(self, key: str) -> tuple[bytes, bytes]:
        """Buckets (intp) and weights (float32) of one word (``key`` has no space) or word
        n-gram, as raw bytes."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        cfg = self.config
        if " " in key:
            buckets = [self._hash(f"{key.count(' ') + 1}:{key}")]
            weights = [1.0]
        else:
            buckets = [self._hash("w:" + key)]
            weights = [1.0]
            if cfg.char_max:
                marked = f"<{key}>"
                for n in range(cfg.char_min, cfg.char_max + 1):
                    for i in range(len(marked) - n + 1):
                        buckets.append(self._hash("c:" + marked[i : i + n]))
                        weights.append(cfg.char_weight)
        result = (np.array(buckets, np.intp).tobytes(), np.array(weights, np.float32).tobytes())
        if len(self._cache) < 200_000:
            self._cache[key] = result
        return result

    def sparse_words(self, words: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The vector of already-normalized ``words`` as its nonzero buckets: unique
        indices (in sentence order, not sorted) and their L2-normalized weights. A
        sentence touches ~100 of thousands of buckets, so the runtime feeds only these to
        the model, whose first layer gathers one kernel row per index and sums them."""
        units = [self._unit(word) for word in words]
        for n in range(2, self.config.word_ngrams + 1):
            units.extend(self._unit(" ".join(words[i : i + n])) for i in range(len(words) - n + 1))
        if not units:
            return self._empty
        index = np.frombuffer(b"".join([u[0] for u in units]), np.intp)
        scratch = self._scratch
        # A bucket hit twice (a repeated word, a shared n-gram, a hash collision) gets the
        # sum of its weights, added in sentence order: the dense vector, bit for bit.
        np.add.at(scratch, index, np.frombuffer(b"".join([u[1] for u in units]), np.float32))
        n = len(index)
        if n > len(self._positions):
            self._positions = np.arange(2 * n, dtype=np.intp)
        positions = self._positions[:n]
        # Keep each bucket once, at its last occurrence: O(touched), no sort.
        self._last[index] = positions
        index = index[self._last[index] == positions]
        weights = scratch[index]
        scratch[index] = 0.0  # all zeros again for the next sentence
        weights *= 1.0 / np.sqrt(np.dot(weights, weights))
        return index, weights

    def into(self, text: str, out: np.ndarray) -> np.ndarray:
        """Write the vector of ``text`` into the preallocated ``out``."""
        out.fill(0.0)
        index, weights = self.sparse_words(tokenize(text))
        out[index] = weights
        return out

    def vector(self, text: str) -> np.ndarray:
        """A new ``[dim]`` float32 vector for ``text``."""
        return self.into(text, np.zeros(self.config.dim, np.float32))

    def transform(self, texts: list[str]) -> np.ndarray:
        """Dense ``[len(texts), dim]`` float32 matrix, for training and evaluation."""
        matrix = np.zeros((len(texts), self.config.dim), np.float32)
        for row, text in enumerate(texts):
            self.into(text, matrix[row])
        return matrix
