"""A word-vector file in fastText's text format, for builds with a word branch in tests."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def write_vectors(path: Path, words: Sequence[str], dim: int = 8, seed: int = 0) -> Path:
    """Random ``dim``-float vectors for ``words``, under a ``<count> <dim>`` header."""
    rng = np.random.default_rng(seed)
    lines = [f"{len(words)} {dim}"]
    for word in words:
        lines.append(" ".join([word, *(f"{v:.5f}" for v in rng.normal(size=dim))]))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
