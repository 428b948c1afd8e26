"""Teachers and the benchmark's teacher cache (bench/nlu.py): what the distillation reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.featurize import Featurizer, FeaturizerConfig
from bench.nlu import LogitStore, finetune_epochs, recombine, sparse_features, word_swaps
from convert.teacher import MlpTeacher, Teacher

TEXTS = ["turn on the light", "turn off the light", "play some jazz", "play the radio"] * 8
LABELS = np.array([0, 0, 1, 1] * 8)


def test_mlp_teacher_fits_and_scores() -> None:
    teacher = MlpTeacher(FeaturizerConfig(dim=256), hidden=16, epochs=20)
    assert isinstance(teacher, Teacher)
    teacher.fit(TEXTS, LABELS, 2, seed=0)
    logits = teacher.logits(["turn on the light please", "play jazz"])
    assert logits.shape == (2, 2) and logits.dtype == np.float32
    assert list(logits.argmax(1)) == [0, 1]
    assert teacher.size_bytes() > 0


def test_logit_store_round_trip(tmp_path: Path) -> None:
    store = LogitStore(tmp_path)
    assert store.missing(["a", "b", "a"]) == ["a", "b"]
    store.add(["a", "b"], np.array([[1.0, 2.0], [3.0, 4.0]]))
    again = LogitStore(tmp_path)  # read back from disk
    assert again.missing(["a", "c"]) == ["c"]
    np.testing.assert_array_equal(again.get(["b", "a"]), [[3.0, 4.0], [1.0, 2.0]])


def test_finetune_spec_per_data_set() -> None:
    assert finetune_epochs("2", "HWU64") == 2
    assert finetune_epochs("snips=1,hwu64=3", "SNIPS") == 1
    assert finetune_epochs("snips=1,hwu64=3", "HWU64") == 3
    assert finetune_epochs("snips=1", "CLINC150") == 0


def test_augmentations_keep_the_words() -> None:
    swapped = word_swaps(TEXTS[:4], 1, seed=0)
    assert [sorted(s.split()) for s in swapped] == [sorted(t.split()) for t in TEXTS[:4]]
    spliced = recombine(TEXTS, LABELS, 1, seed=0)
    vocabulary = {w for t in TEXTS for w in t.split()}
    assert spliced and all(set(s.split()) <= vocabulary for s in spliced)


def test_sparse_features_match_the_dense_featurizer() -> None:
    featurizer = Featurizer(FeaturizerConfig(dim=512))
    texts = ["play the song shine a light", "", "a a a b"]
    np.testing.assert_array_equal(
        sparse_features(featurizer, texts).toarray(), featurizer.transform(texts)
    )
