"""Turn an utterance into the model's input vector: hashed word and character n-grams.

Training (convert/) and the runtime (agent/) both call this module, so the two cannot
disagree on how a sentence becomes numbers. Pure Python and numpy, deterministic across
processes and machines (CRC-32, never Python's salted ``hash``), and Unicode-safe: text is
NFKC-normalized and case-folded, and ``\\w`` matches Hangul, Cyrillic, accented letters.
"""

from __future__ import annotations

import math
import re
import unicodedata
import zlib
from dataclasses import asdict, dataclass, replace
from operator import itemgetter
from typing import Any, NamedTuple

import numpy as np

_NON_WORD = re.compile(r"[\W_]+")
# "what's" and "kid’s" are one word to a recognizer; keep them one word here too.
_APOSTROPHE = re.compile(r"(?<=\w)['’](?=\w)")
_FIRST, _SECOND, _THIRD, _FOURTH = itemgetter(0), itemgetter(1), itemgetter(2), itemgetter(3)
_FIFTH = itemgetter(4)
NORMS = ("words", "merged")
WORD_ROW_WEIGHT = 4.0
"""The weight a word row is fed at; the export divides the row by it. A word's row sums
~20 n-gram rows and would otherwise set the int8 scale that every row of the first layer
shares (CLINC150's int8 student lost 0.3 point in scope to that)."""
_WORD_ROW_WEIGHT = np.full(1, WORD_ROW_WEIGHT, np.float32).tobytes()


_INT_BOUNDS = {
    "dim": (16, 1 << 22),
    "word_ngrams": (1, 8),
    "char_min": (0, 32),
    "char_max": (0, 32),
    "window": (1, 15),
    "positions": (1, 512),
}
"""Bounds of the integer settings: far beyond any model convert makes (dim 4096 to 8192,
positions 16, window 3), and small enough that nothing sized from them exhausts a Pi."""
MAX_CHAR_WEIGHT = 100.0
MAX_WORD_ROWS = 100_000
"""Words with a first-layer row of their own (convert's default is 4096)."""
MAX_LEXICON = 500_000
"""Words of the word-vector branch (convert's default is 20,000; MiniLM has 30,522)."""

_WORD_LISTS = ("words", "lexicon")
"""The fields of :class:`FeaturizerConfig` that are word lists: checked, and stored in a
model's JSON (only when not empty), alike."""


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
    words: tuple[str, ...] = ()
    """Words with a first-layer row of their own, after the ``dim`` buckets: the export sums
    each one's word and character n-gram rows into it (``convert/quantize.py``), so a
    sentence feeds one occurrence for such a word instead of ~20, for the same product.
    The model's input changes, its output does not; empty for none."""
    norm: str = "words"
    """How a sentence's ``scale`` is taken. ``words``: as if no two words (or word n-grams)
    shared a bucket, 1 / sqrt of the sum of each one's own squared norm, one cached float
    per word (half the featurizer's time). ``merged``: the exact L2 norm of the summed
    vector, what models built before this field had (and what a model file without it
    gets). Training and the runtime use the same one, so either is exact for its model."""
    lexicon: tuple[str, ...] = ()
    """Words of the model's word-vector branch (``convert/model.py``): each has a row of
    its own there, learned from a pretrained word vector, so that the model knows
    something of words its training sentences use in few contexts. Empty for no branch."""
    window: int = 3
    """Words the branch sees at once (an odd number): 3 reads each word with its
    neighbours, so that "turn off" and "off turn" differ."""
    positions: int = 16
    """Words of a sentence the branch reads (the rest only reach the n-gram features)."""

    def __post_init__(self) -> None:
        # A model.json is input: every size is bounded before anything is allocated from
        # it (positions = 10**12 would ask for terabytes of window indices).
        for key, (low, high) in _INT_BOUNDS.items():
            value = getattr(self, key)
            if type(value) is not int or not low <= value <= high:
                shown = f", not {value}" if type(value) is int else ""
                raise ValueError(f"featurizer {key} must be an integer from {low} to {high}{shown}")
        weight = self.char_weight
        if type(weight) not in (int, float) or not 0.0 <= weight <= MAX_CHAR_WEIGHT:
            raise ValueError(f"featurizer char_weight must be a number from 0 to {MAX_CHAR_WEIGHT}")
        for key, most in (("words", MAX_WORD_ROWS), ("lexicon", MAX_LEXICON)):
            if len(getattr(self, key)) > most:
                raise ValueError(f"featurizer {key} has more than {most} words")
        if self.norm not in NORMS:
            raise ValueError(f"featurizer norm must be one of {', '.join(NORMS)}, not {self.norm}")
        if self.dim < 16 or self.dim & (self.dim - 1):
            raise ValueError(f"featurizer dim must be a power of two >= 16, not {self.dim}")
        if self.word_ngrams < 1:
            raise ValueError("featurizer word_ngrams must be >= 1")
        if self.char_max and not 1 <= self.char_min <= self.char_max:
            raise ValueError("featurizer needs 1 <= char_min <= char_max (or char_max = 0)")
        for key in _WORD_LISTS:
            words = getattr(self, key)
            if len(set(words)) != len(words):
                raise ValueError(f"featurizer {key} has a word twice")
            if not all(isinstance(w, str) and tokenize(w) == [w] for w in words):
                raise ValueError(f"featurizer {key} must be single normalized words")
        if self.window < 1 or self.window % 2 == 0:
            raise ValueError(f"featurizer window must be an odd number >= 1, not {self.window}")
        if self.positions < 1:
            raise ValueError(f"featurizer positions must be >= 1, not {self.positions}")

    @property
    def padding(self) -> int:
        """The first-layer row after the buckets and the words' rows: zeros, for unused
        slots of the model's input."""
        return self.dim + len(self.words)

    @property
    def table_rows(self) -> int:
        """Rows of one window offset's block of the word branch's table: padding (0),
        unknown word (1), then the lexicon."""
        return len(self.lexicon) + 2

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for key in _WORD_LISTS:
            if data[key]:
                data[key] = list(data[key])
            else:  # a model without them reads as before, and as older agents expect
                del data[key]
        if not self.lexicon:
            del data["window"], data["positions"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> FeaturizerConfig:
        data = dict(data)
        data.setdefault("norm", "merged")  # the models built before the field existed
        for key in _WORD_LISTS:
            if key in data:
                if not isinstance(data[key], list):
                    raise ValueError(f"featurizer {key} must be a list of words")
                data[key] = tuple(data[key])
        return cls(**data)


# What _NON_WORD matches among ASCII characters: everything but letters and digits.
_ASCII_SEPARATORS = str.maketrans({chr(c): " " for c in range(128) if not chr(c).isalnum()})


def normalize(text: str) -> str:
    """Canonical form of a sentence: NFKC, case-folded, punctuation as single spaces."""
    if text.isascii():
        # The common path, at a third of the regular expressions' time: NFKC leaves
        # ASCII unchanged, and a translation table does what _NON_WORD does (tested).
        folded = text.lower()
        if "'" in folded:
            folded = _APOSTROPHE.sub("", folded)
        return " ".join(folded.translate(_ASCII_SEPARATORS).split())
    folded = _APOSTROPHE.sub("", unicodedata.normalize("NFKC", text).casefold())
    return " ".join(_NON_WORD.sub(" ", folded).split())


def tokenize(text: str) -> list[str]:
    """Words of a sentence, after :func:`normalize`."""
    return normalize(text).split()


class Occurrences(NamedTuple):
    """A sentence as the intent model takes it: every feature occurrence, repeats kept.

    ``ids`` holds the bucket of each occurrence (int32, what the model gathers) and
    ``weights`` its weight (float32: 1 for a word n-gram, ``char_weight`` for a character
    n-gram), word by word (the word, then its character n-grams), then the word pairs;
    ``scale`` is the factor that normalizes the summed vector (``FeaturizerConfig.norm``
    says how). The model sums one kernel row per occurrence, times its weight, and
    multiplies by ``scale``: the product of the normalized vector with its first layer,
    touching only the rows the sentence has. A word of ``config.words`` is one occurrence
    of its own row (at :data:`WORD_ROW_WEIGHT`) instead of its n-grams; ``scale`` is the
    same either way.

    ``windows`` is the input of the word-vector branch, if the model has one
    (``config.lexicon``): for each of ``config.positions`` positions, the table rows of
    the ``config.window`` words centred on it (see :meth:`Featurizer.windows`).
    """

    ids: np.ndarray
    weights: np.ndarray
    scale: float
    windows: np.ndarray | None = None


_Unit = tuple[bytes, bytes, bytes, bytes, float]
"""A word's (or word n-gram's) cached features: the ids and weights the model is fed, the
n-gram ids and weights the norm is taken over, and their own squared norm."""


class Featurizer:
    """Maps sentences to normalized hashed n-gram vectors of ``config.dim`` floats."""

    def __init__(self, config: FeaturizerConfig) -> None:
        self.config = config
        self._mask = config.dim - 1
        self._rows = {word: config.dim + row for row, word in enumerate(config.words)}
        self._per_word = config.norm == "words"
        # Lexicon rows start at 2: 0 is padding, 1 an unknown word.
        self._lexicon = {word: row + 2 for row, word in enumerate(config.lexicon)}
        # Window offset j of position i reads word i + j - window // 2: the index into the
        # sentence's ids padded with window // 2 zeros on each side, computed once.
        self._window_index = (
            np.arange(config.positions)[:, None] + np.arange(config.window)[None, :]
        )
        self._offsets = np.arange(config.window, dtype=np.int32) * config.table_rows
        # The features of a word (or word pair) never change, so each is hashed once; a
        # command vocabulary is small, and the cache is bounded for open-ended input. Each
        # entry is raw bytes: what the model is fed (int32 ids, float32 weights), then the
        # n-grams that the norm is taken over (the same, except for a word with a row of
        # its own), then their own squared norm. Joining bytes and viewing the result costs
        # a fraction of concatenating small arrays.
        self._cache: dict[str, _Unit] = {}

    def __getstate__(self) -> dict[str, Any]:
        # A pickled featurizer (inside a cached teacher) is its settings; the word cache is
        # rebuilt, so a pickle from an older version (with other private fields) loads too.
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        config = state["config"]
        if "norm" not in vars(config):  # pickled before the field: it had the exact norm
            config = replace(config, norm="merged")
        self.__init__(config)  # type: ignore[misc]

    def _hash(self, feature: str) -> int:
        return zlib.crc32(feature.encode("utf-8")) & self._mask

    def ngrams(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """The buckets and weights of one word's (or word n-gram's) n-grams: what a word
        row of the model sums (``convert.quantize``)."""
        unit = self._unit(key)
        return np.frombuffer(unit[2], np.int32), np.frombuffer(unit[3], np.float32)

    def _unit(self, key: str) -> _Unit:
        """The cached features of one word (``key`` has no space) or word n-gram."""
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        cfg = self.config
        if " " in key:
            ids = [self._hash(f"{key.count(' ') + 1}:{key}")]
        else:
            ids = [self._hash("w:" + key)]
            if cfg.char_max:
                marked = f"<{key}>"
                for n in range(cfg.char_min, cfg.char_max + 1):
                    ids.extend(
                        self._hash("c:" + marked[i : i + n]) for i in range(len(marked) - n + 1)
                    )
        id_array = np.array(ids, np.int32)
        weight_array = np.full(len(ids), cfg.char_weight, np.float32)
        weight_array[0] = 1.0
        ngram_ids, ngram_weights = id_array.tobytes(), weight_array.tobytes()
        # Its own squared norm, repeats within it summed first ("<ba", "an", "na" twice).
        own = np.bincount(id_array, weight_array)
        square = float(own.dot(own))
        row = self._rows.get(key)
        if row is None:
            result = (ngram_ids, ngram_weights, ngram_ids, ngram_weights, square)
        else:
            result = (
                np.array([row], np.int32).tobytes(),
                _WORD_ROW_WEIGHT,
                ngram_ids,
                ngram_weights,
                square,
            )
        if len(self._cache) < 200_000:
            self._cache[key] = result
        return result

    def _units(self, words: list[str]) -> list[_Unit]:
        """The cached features of each word, then of each word n-gram, in that order."""
        # The hot path of every command: cache hits are looked up inline (a method call
        # per word cost a third of the featurizer's time) and pairs are formatted, not joined.
        cache, unit = self._cache, self._unit
        units = [cache.get(word) or unit(word) for word in words]
        if self.config.word_ngrams >= 2:
            pairs = map("{} {}".format, words, words[1:])
            units += [cache.get(pair) or unit(pair) for pair in pairs]
        for n in range(3, self.config.word_ngrams + 1):
            units += [unit(" ".join(words[i : i + n])) for i in range(len(words) - n + 1)]
        return units

    def occurrences(self, words: list[str]) -> Occurrences:
        """The features of already-normalized ``words``: see :class:`Occurrences`."""
        units = self._units(words)
        ids = np.frombuffer(b"".join(map(_FIRST, units)), np.int32)
        weights = np.frombuffer(b"".join(map(_SECOND, units)), np.float32)
        # Without word rows, the fed occurrences are the n-grams the norm is taken over.
        ngrams = None if self._rows else (ids, weights)
        windows = self.windows(words) if self._lexicon else None
        return Occurrences(ids, weights, self._scale(units, ngrams), windows)

    def _lexicon_rows(self, words: list[str]) -> list[int]:
        """The lexicon rows of the first ``config.positions`` words (1 for an unknown word)."""
        known = self._lexicon
        return [known.get(word, 1) for word in words[: self.config.positions]]

    def word_ids(self, words: list[str]) -> np.ndarray:
        """The lexicon rows of the first ``config.positions`` words (1 for an unknown word),
        padded with 0: the word branch's input in training (``[positions]`` int32)."""
        out = np.zeros(self.config.positions, np.int32)
        rows = self._lexicon_rows(words)
        out[: len(rows)] = rows
        return out

    def windows(self, words: list[str]) -> np.ndarray:
        """What the exported word branch gathers (``[positions * window]`` int32): for each
        position, the row of each word of its window in that offset's block of the table,
        the padding row past either end. Positions after the last word repeat the first
        one's window, which leaves the branch's max over positions unchanged; an empty
        sentence gathers only padding rows, as training's mask gives it."""
        cfg = self.config
        half = cfg.window // 2
        rows = self._lexicon_rows(words)
        n = len(rows)
        padded = np.zeros(cfg.positions + cfg.window - 1, np.int32)
        padded[half : half + n] = rows
        out = padded[self._window_index]
        out += self._offsets
        if n:
            out[n:] = out[0]
        return out.reshape(-1)

    def _scale(self, units: list[_Unit], ngrams: tuple[np.ndarray, np.ndarray] | None) -> float:
        """The factor that normalizes the sentence of ``units`` (0 for none), by
        ``config.norm``; ``ngrams`` are their joined n-gram ids and weights, if at hand."""
        if not units:
            return 0.0
        if self._per_word:
            return 1.0 / math.sqrt(sum(map(_FIFTH, units)))
        if ngrams is None:
            ngrams = (
                np.frombuffer(b"".join(map(_THIRD, units)), np.int32),
                np.frombuffer(b"".join(map(_FOURTH, units)), np.float32),
            )
        # The norm of the merged vector, in which a bucket hit twice (a repeated word, a
        # character n-gram shared by two words, a hash collision) holds the sum of its
        # weights: what the model was trained on. One bincount beats summing in place, and
        # ndarray.dot skips matmul's dispatch, which costs more than the product here.
        merged = np.bincount(*ngrams, self.config.dim)
        return 1.0 / math.sqrt(merged.dot(merged))

    def into(self, text: str, out: np.ndarray) -> np.ndarray:
        """Write the n-gram vector of ``text`` (``[dim]``, what the model is trained on)
        into the preallocated ``out``."""
        out.fill(0.0)
        # The n-grams, also of words the model feeds as rows (the same bytes for the rest).
        units = self._units(tokenize(text))
        ids = np.frombuffer(b"".join(map(_THIRD, units)), np.int32)
        weights = np.frombuffer(b"".join(map(_FOURTH, units)), np.float32)
        np.add.at(out, ids, weights * np.float32(self._scale(units, (ids, weights))))
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

    def word_id_matrix(self, texts: list[str]) -> np.ndarray:
        """Every text's :meth:`word_ids` (``[len(texts), positions]`` int32): the word
        branch's input beside :meth:`transform`'s, for training and evaluation."""
        matrix = np.zeros((len(texts), self.config.positions), np.int32)
        for row, text in enumerate(texts):
            matrix[row] = self.word_ids(tokenize(text))
        return matrix
