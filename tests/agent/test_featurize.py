from __future__ import annotations

import itertools
import subprocess
import sys
import zlib

import numpy as np
import pytest

from agent.featurize import Featurizer, FeaturizerConfig, normalize, tokenize


def test_normalize_folds_case_width_and_punctuation() -> None:
    assert normalize("  Turn ON the Kitchen-Light!! ") == "turn on the kitchen light"
    assert normalize("ＴＵＲＮ　ｏｎ") == "turn on"
    assert normalize("거실 불 켜 줘.") == "거실 불 켜 줘"
    assert normalize("Straße_lights") == "strasse lights"
    assert normalize("What's on? It’s the kids' room") == "whats on its the kids room"
    assert tokenize("") == []


def test_vector_is_unit_length_and_pinned() -> None:
    # The bucket numbers are pinned: a change here silently breaks every shipped model.
    vector = Featurizer(FeaturizerConfig(dim=1024)).vector("Turn on the kitchen light")
    nonzero = np.flatnonzero(vector)
    assert nonzero[:12].tolist() == [10, 11, 12, 20, 39, 53, 72, 77, 110, 128, 156, 205]
    assert len(nonzero) == 63
    assert float(np.dot(vector, vector)) == pytest.approx(1.0, abs=1e-6)


def test_korean_words_get_features() -> None:
    featurizer = Featurizer(FeaturizerConfig(dim=1024))
    vector = featurizer.vector("거실 불 켜 줘")
    assert np.flatnonzero(vector)[:8].tolist() == [24, 54, 65, 88, 118, 259, 307, 313]
    assert not np.allclose(vector, featurizer.vector("주방 불 켜 줘"))


def test_empty_sentence_is_the_zero_vector() -> None:
    assert not Featurizer(FeaturizerConfig(dim=64)).vector("?!").any()


def test_into_reuses_the_buffer_and_matches_transform() -> None:
    featurizer = Featurizer(FeaturizerConfig(dim=512))
    texts = ["turn on the light", "dim the kitchen to fifty percent", "거실 불 꺼"]
    matrix = featurizer.transform(texts)
    buffer = np.full(512, 7.0, np.float32)
    for row, text in zip(matrix, texts, strict=True):
        assert featurizer.into(text, buffer) is buffer
        np.testing.assert_array_equal(buffer, row)


def test_sparse_words_are_unique_and_sum_repeats() -> None:
    # "the ... the" repeats a word; dim 64 forces hash collisions between n-grams. Each
    # bucket must appear once, holding the sum of every feature that hashed there.
    config = FeaturizerConfig(dim=64)
    featurizer = Featurizer(config)
    words = tokenize("turn the light in the kitchen on and the light in the hall off")
    index, weights = featurizer.sparse_words(words)
    assert len(set(index.tolist())) == len(index)
    expected = np.zeros(64, np.float64)
    for word in words:
        expected[zlib.crc32(f"w:{word}".encode()) & 63] += 1.0
        marked = f"<{word}>"
        for n in range(config.char_min, config.char_max + 1):
            for i in range(len(marked) - n + 1):
                expected[zlib.crc32(f"c:{marked[i : i + n]}".encode()) & 63] += config.char_weight
    for pair in itertools.pairwise(words):
        expected[zlib.crc32(f"2:{' '.join(pair)}".encode()) & 63] += 1.0
    expected /= np.linalg.norm(expected)
    got = np.zeros(64, np.float64)
    got[index] = weights
    np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert sorted(index.tolist()) == np.flatnonzero(expected).tolist()


def test_same_vector_in_another_process() -> None:
    # CRC-32, not Python's per-process salted hash(): a fresh interpreter must agree.
    code = (
        "from agent.featurize import *; import sys;"
        "v = Featurizer(FeaturizerConfig(dim=2048)).vector('set the hallway to twenty');"
        "sys.stdout.write(v.tobytes().hex())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout
    here = Featurizer(FeaturizerConfig(dim=2048)).vector("set the hallway to twenty")
    assert bytes.fromhex(out) == here.tobytes()


@pytest.mark.parametrize("dim", [0, 100, 8])
def test_config_rejects_bad_dim(dim: int) -> None:
    with pytest.raises(ValueError, match="power of two"):
        FeaturizerConfig(dim=dim)
