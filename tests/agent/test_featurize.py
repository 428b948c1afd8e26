from __future__ import annotations

import pickle
import subprocess
import sys
import unicodedata
import zlib
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.featurize import (
    _APOSTROPHE,
    _NON_WORD,
    WORD_ROW_WEIGHT,
    Featurizer,
    FeaturizerConfig,
    normalize,
    tokenize,
)


def test_normalize_folds_case_width_and_punctuation() -> None:
    assert normalize("  Turn ON the Kitchen-Light!! ") == "turn on the kitchen light"
    assert normalize("ＴＵＲＮ　ｏｎ") == "turn on"
    assert normalize("거실 불 켜 줘.") == "거실 불 켜 줘"
    assert normalize("Straße_lights") == "strasse lights"
    assert normalize("What's on? It’s the kids' room") == "whats on its the kids room"
    assert tokenize("") == []


def test_vector_is_pinned_and_merged_is_unit_length() -> None:
    # The bucket numbers are pinned: a change here silently breaks every shipped model.
    text = "Turn on the kitchen light"
    vector = Featurizer(FeaturizerConfig(dim=1024)).vector(text)
    nonzero = np.flatnonzero(vector)
    assert nonzero[:12].tolist() == [10, 11, 12, 20, 39, 53, 72, 77, 110, 128, 156, 205]
    assert len(nonzero) == 63
    merged = Featurizer(FeaturizerConfig(dim=1024, norm="merged")).vector(text)
    assert float(np.dot(merged, merged)) == pytest.approx(1.0, abs=1e-6)
    # The per-word norm differs only by the words' shared buckets: the same direction.
    np.testing.assert_allclose(vector / np.linalg.norm(vector), merged, atol=1e-6)


def test_a_model_file_without_a_norm_keeps_the_merged_one() -> None:
    data = FeaturizerConfig(dim=64).to_json()
    assert data["norm"] == "words"
    del data["norm"]
    assert FeaturizerConfig.from_json(data).norm == "merged"
    with pytest.raises(ValueError, match=r"^featurizer norm must be one of words, merged, not l1$"):
        FeaturizerConfig(norm="l1")


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


@pytest.mark.parametrize("norm", ["words", "merged"])
@pytest.mark.parametrize(
    ("word_ngrams", "char_max"), [(2, 4), (3, 4), (1, 0)], ids=["default", "trigrams", "words"]
)
def test_occurrences_keep_repeats_and_scale_by_the_norm(
    word_ngrams: int, char_max: int, norm: str
) -> None:
    # "the ... the" repeats a word; dim 64 forces hash collisions between n-grams. Every
    # occurrence is listed, and the scale normalizes the vector in which a bucket holds the
    # sum of every feature that hashed there. The featurizer has a fast path for pairs;
    # the other settings hold the general one to the same definition.
    config = FeaturizerConfig(dim=64, word_ngrams=word_ngrams, char_max=char_max, norm=norm)
    featurizer = Featurizer(config)
    words = tokenize("turn the light in the kitchen on and the light in the hall off")
    features = featurizer.occurrences(words)
    # Word by word (the word, then its character n-grams), then the word pairs.
    expected: list[tuple[int, float]] = []
    own_squares = []  # each word's and word n-gram's own squared norm
    for word in words:
        own = [(zlib.crc32(f"w:{word}".encode()) & 63, 1.0)]
        marked = f"<{word}>"
        for n in range(config.char_min, config.char_max + 1 if config.char_max else 0):
            for i in range(len(marked) - n + 1):
                bucket = zlib.crc32(f"c:{marked[i : i + n]}".encode()) & 63
                own.append((bucket, config.char_weight))
        summed = np.zeros(64)
        np.add.at(summed, [b for b, _ in own], [w for _, w in own])
        own_squares.append(float(summed.dot(summed)))
        expected += own
    for n in range(2, word_ngrams + 1):
        grams = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
        expected += [(zlib.crc32(f"{n}:{gram}".encode()) & 63, 1.0) for gram in grams]
        own_squares += [1.0] * len(grams)
    assert features.ids.dtype == np.int32 and features.weights.dtype == np.float32
    assert list(zip(features.ids.tolist(), features.weights.tolist(), strict=True)) == expected
    merged = np.zeros(64, np.float64)
    np.add.at(merged, [b for b, _ in expected], [w for _, w in expected])
    assert len({b for b, _ in expected}) < len(expected)
    if norm == "merged":
        assert features.scale == pytest.approx(1 / np.linalg.norm(merged), rel=1e-12)
    else:  # as if no two words shared a bucket; here some do, so the two differ
        assert features.scale == pytest.approx(1 / np.sqrt(sum(own_squares)), rel=1e-12)
        assert features.scale != pytest.approx(1 / np.linalg.norm(merged), rel=1e-3)
    # The dense vector the model is trained on is that merged vector, scaled.
    np.testing.assert_allclose(
        featurizer.vector(" ".join(words)), merged * features.scale, rtol=1e-6
    )
    # The scratch buffer is clean again: a second call gives the same scale.
    assert featurizer.occurrences(words).scale == features.scale


def test_empty_sentence_has_no_occurrences() -> None:
    features = Featurizer(FeaturizerConfig(dim=64)).occurrences([])
    assert (len(features.ids), len(features.weights), features.scale) == (0, 0, 0.0)


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
    with pytest.raises(ValueError, match=r"power of two|an integer from 16 to 4194304"):
        FeaturizerConfig(dim=dim)


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"positions": 10**12}, "positions must be an integer from 1 to 512, not 1000000000000"),
        ({"dim": 1 << 40}, "dim must be an integer from 16 to 4194304, not 1099511627776"),
        ({"window": 10**9 + 1}, "window must be an integer from 1 to 15, not 1000000001"),
        ({"word_ngrams": True}, "word_ngrams must be an integer from 1 to 8$"),
        ({"dim": 4096.0}, "dim must be an integer from 16 to 4194304$"),
        ({"char_weight": float("nan")}, "char_weight must be a number from 0 to 100"),
        ({"char_weight": "1"}, "char_weight must be a number from 0 to 100"),
    ],
)
def test_sizes_from_a_model_file_are_bounded(changes: dict[str, object], problem: str) -> None:
    # A model.json is input: its sizes are checked before anything is allocated from them.
    with pytest.raises(ValueError, match=problem):
        FeaturizerConfig.from_json({**FeaturizerConfig().to_json(), **changes})


def test_a_pickled_featurizer_is_its_settings() -> None:
    # Cached teachers pickle their featurizer: the word cache and scratch buffers must not
    # travel, and the copy must compute the same features.
    featurizer = Featurizer(FeaturizerConfig(dim=256))
    words = tokenize("turn on the kitchen light")
    before = featurizer.occurrences(words)
    copy = pickle.loads(pickle.dumps(featurizer))
    assert copy.config == featurizer.config
    assert copy._cache == {}
    after = copy.occurrences(words)
    assert after.ids.tolist() == before.ids.tolist()
    assert after.weights.tolist() == before.weights.tolist()
    assert after.scale == before.scale


@settings(max_examples=400)
@given(
    st.text(st.characters(max_codepoint=127), max_size=40)
    | st.text(st.sampled_from("aB7_' -!."), max_size=12)  # apostrophes beside anything
)
def test_the_ascii_path_normalizes_as_the_unicode_path(text: str) -> None:
    # normalize() skips NFKC and the regular expressions for ASCII; the result must be
    # what the general path gives (the featurizer's input, so the models', depends on it).
    general = _APOSTROPHE.sub("", unicodedata.normalize("NFKC", text).casefold())
    assert normalize(text) == " ".join(_NON_WORD.sub(" ", general).split())


def test_a_word_with_a_row_is_one_occurrence_at_the_same_scale() -> None:
    plain = Featurizer(FeaturizerConfig(dim=64))
    config = FeaturizerConfig(dim=64, words=("kitchen", "the"))
    rows = Featurizer(config)
    assert (plain.config.padding, config.padding) == (64, 66)
    words = tokenize("turn on the kitchen light")
    before, after = plain.occurrences(words), rows.occurrences(words)
    assert after.scale == before.scale  # the norm is the n-grams' either way
    # "turn", "on" and "light" keep their n-grams; "the" and "kitchen" are rows 65 and 64.
    turn, on, light = (len(plain.occurrences([w]).ids) for w in ("turn", "on", "light"))
    assert after.ids[turn + on] == 65 and after.ids[turn + on + 1] == 64
    assert after.weights[turn + on : turn + on + 2].tolist() == [WORD_ROW_WEIGHT] * 2
    assert len(after.ids) == turn + on + 2 + light + 4  # and the four word pairs
    pair_ids, pair_weights = rows.ngrams("the kitchen")
    assert (len(pair_ids), pair_weights.tolist()) == (1, [1.0])
    np.testing.assert_array_equal(rows.ngrams("kitchen")[0], plain.occurrences(["kitchen"]).ids)
    # The dense vector (what the model is trained on) is the n-grams'.
    np.testing.assert_array_equal(
        rows.vector("turn on the kitchen light"), plain.vector("turn on the kitchen light")
    )


def test_word_rows_are_checked_and_stored_only_when_used() -> None:
    assert "words" not in FeaturizerConfig(dim=64).to_json()  # older models read the same
    config = FeaturizerConfig(dim=64, words=("lamp",))
    assert config.to_json()["words"] == ["lamp"]
    assert FeaturizerConfig.from_json(config.to_json()) == config
    for words, problem in [
        (("lamp", "lamp"), "has a word twice"),
        (("Lamp",), "single normalized words"),
        (("desk lamp",), "single normalized words"),
    ]:
        with pytest.raises(ValueError, match=problem):
            FeaturizerConfig(dim=64, words=words)
    with pytest.raises(ValueError, match="must be a list"):
        FeaturizerConfig.from_json({"dim": 64, "words": "lamp"})


def test_word_ids_number_the_lexicon_after_padding_and_unknown() -> None:
    featurizer = Featurizer(FeaturizerConfig(dim=64, lexicon=("light", "on", "turn"), positions=4))
    assert featurizer.config.table_rows == 5
    assert featurizer.word_ids(["turn", "on", "a", "light"]).tolist() == [4, 3, 1, 2]
    assert featurizer.word_ids(["on"]).tolist() == [3, 0, 0, 0]
    # Only the first ``positions`` words are read.
    assert featurizer.word_ids(["on"] * 6).tolist() == [3, 3, 3, 3]
    # Many texts at once, normalized as the runtime does, one row each.
    matrix = featurizer.word_id_matrix(["Turn ON a light", "on", ""])
    assert matrix.dtype == np.int32
    assert matrix.tolist() == [[4, 3, 1, 2], [3, 0, 0, 0], [0, 0, 0, 0]]


def test_windows_are_each_positions_words_in_their_offsets_block() -> None:
    config = FeaturizerConfig(dim=64, lexicon=("light", "on", "turn"), window=3, positions=4)
    featurizer = Featurizer(config)
    # Blocks of 5 rows: offset 0 (left neighbour) rows 0-4, centre 5-9, right 10-14.
    windows = featurizer.windows(["turn", "lamp"]).reshape(4, 3)
    assert windows.tolist() == [
        [0, 5 + 4, 10 + 1],  # padding | turn | unknown
        [0 + 4, 5 + 1, 10],  # turn | unknown | padding
        [0, 9, 11],  # past the sentence: the first position again
        [0, 9, 11],
    ]
    assert featurizer.windows([]).tolist() == [0, 5, 10] * 4  # padding rows only
    assert featurizer.occurrences(["turn", "lamp"]).windows.tolist() == windows.ravel().tolist()
    one = Featurizer(replace(config, window=1))
    assert one.windows(["turn", "lamp", "on"]).tolist() == [4, 1, 3, 4]
    assert Featurizer(FeaturizerConfig(dim=64)).occurrences(["turn"]).windows is None


def test_lexicon_is_checked_and_stored_only_when_used() -> None:
    plain = FeaturizerConfig(dim=64).to_json()
    assert not {"lexicon", "window", "positions"} & set(plain)  # older agents read the same
    config = FeaturizerConfig(dim=64, lexicon=("lamp", "on"), window=1, positions=8)
    assert config.to_json()["lexicon"] == ["lamp", "on"]
    assert FeaturizerConfig.from_json(config.to_json()) == config
    for changes, problem in [
        ({"lexicon": ("on", "on")}, "lexicon has a word twice"),
        ({"lexicon": ("Lamp",)}, "lexicon must be single normalized words"),
        ({"window": 2}, "window must be an odd number >= 1, not 2"),
        ({"positions": 0}, "positions must be an integer from 1 to 512, not 0"),
    ]:
        with pytest.raises(ValueError, match=problem):
            FeaturizerConfig(dim=64, **changes)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lexicon must be a list"):
        FeaturizerConfig.from_json({"dim": 64, "lexicon": "lamp"})
