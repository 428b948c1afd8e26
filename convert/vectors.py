"""Pretrained word vectors for the student's word branch (``voice-agent convert --word-vectors``).

The branch knows what the spec's sentences cannot teach: that "lamp" is near "light" and
"lounge" near "living room". Its vectors come either from MiniLM (each word of its English
vocabulary encoded alone: the teacher's own package, no download) or from a text file in
the word2vec / GloVe / fastText ``.vec`` format, one ``word v1 v2 ...`` per line, which is
how vectors for other languages are published (fastText's ``cc.ko.300.vec`` for Korean).
The lexicon is the spec's words that have a vector plus the file's first ``limit`` words
(such files list the most frequent first), so the table stays a few megabytes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agent.featurize import tokenize

MINILM = "minilm"
"""The ``--word-vectors`` value that encodes MiniLM's vocabulary instead of reading a file."""


class VectorsError(ValueError):
    """A word-vector file that cannot be read: the message names the file and line."""


@dataclass(frozen=True)
class WordVectors:
    """A lexicon and its vectors: ``matrix[i]`` is the vector of ``words[i]``."""

    source: str
    words: tuple[str, ...]
    matrix: np.ndarray

    def table(self) -> np.ndarray:
        """The branch's frozen embedding (``[len(words) + 2, d]``), rows as
        :class:`agent.featurize.FeaturizerConfig` numbers them: padding and unknown word
        zero, then the lexicon."""
        table = np.zeros((len(self.words) + 2, self.matrix.shape[1]), np.float32)
        table[2:] = self.matrix
        return table


def read_vectors(path: Path, keep: Iterable[str], limit: int) -> WordVectors:
    """The vectors of ``keep``'s words and of the file's first ``limit`` usable words.

    Words are normalized as the featurizer does (``"Can't"`` is ``"cant"``); one that is
    not a single word then (``"New_York"``) is skipped, and of two spellings that
    normalize alike (``"The"``, ``"the"``) the first in the file wins.
    """
    wanted = set(keep)
    seen: set[str] = set()
    words: list[str] = []
    rows: list[np.ndarray] = []
    width = 0
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                word, _, rest = line.rstrip("\n").rstrip(" ").partition(" ")
                if number == 1 and rest.isdigit() and word.isdigit():
                    continue  # word2vec / fastText header: "<count> <dimension>"
                if not rest:
                    raise VectorsError(f"{path}:{number}: expected a word and its numbers")
                full = len(words) >= limit
                if full and not wanted:
                    break  # the rest of a million-word file holds nothing we keep
                tokens = tokenize(word)
                if len(tokens) != 1:
                    continue
                word = tokens[0]
                if (full and word not in wanted) or word in seen:
                    continue
                try:
                    row = np.array(rest.split(" "), np.float32)
                except ValueError:
                    raise VectorsError(
                        f"{path}:{number}: the vector of '{word}' has a value that is not a number"
                    ) from None
                if not np.isfinite(row).all():
                    raise VectorsError(f"{path}:{number}: the vector of '{word}' is not finite")
                if width and len(row) != width:
                    raise VectorsError(
                        f"{path}:{number}: the vector of '{word}' is {len(row)}-dimensional,"
                        f" the first word's {width}-dimensional"
                    )
                width = len(row)
                words.append(word)
                rows.append(row)
                seen.add(word)
                wanted.discard(word)
    except UnicodeDecodeError as error:
        raise VectorsError(
            f"{path}: not UTF-8 text ({error.reason} at byte {error.start})"
        ) from None
    except OSError as error:
        raise VectorsError(f"{path}: {error.strerror or error}") from None
    if not words:
        raise VectorsError(f"{path}: no word vectors in the file")
    return WordVectors(str(path), tuple(words), np.stack(rows))


def minilm_vectors(
    keep: Iterable[str],
    threads: int | None = None,
    cache_dir: Path | None = None,
    limit: int | None = None,
) -> WordVectors:
    """``keep``'s words and the first ``limit`` (None: all 21,719) of MiniLM's whole English
    words, each encoded alone by MiniLM (under a minute on a workstation's CPU for all of
    them; ``cache_dir`` keeps the vectors on disk for the next build)."""
    from convert.teacher import MiniLMTeacher, minilm_vocabulary

    words = {w for w in keep if tokenize(w) == [w]}
    words |= set(minilm_vocabulary()[:limit])
    lexicon = tuple(sorted(words))
    encoder = MiniLMTeacher(featurizer=None, cache_dir=cache_dir, threads=threads)
    return WordVectors(MINILM, lexicon, encoder.embed(list(lexicon)))
