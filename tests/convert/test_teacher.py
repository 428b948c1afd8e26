"""Teachers and the benchmark's teacher cache (bench/nlu.py): what the distillation reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from agent.featurize import Featurizer, FeaturizerConfig
from bench.datasets import Dataset
from bench.nlu import (
    LogitStore,
    build_parser,
    check_per_dataset,
    finetune_epochs,
    recombine,
    sparse_features,
    teacher_key,
    teacher_label,
    word_swaps,
)
from convert.teacher import MiniLMTeacher, MlpTeacher, Teacher

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


def test_encoder_width_without_loading_it(tmp_path: Path) -> None:
    """An encoder's width comes from its config.json: an empty batch loads no weights (the
    folder here has none, so loading would fail)."""
    (tmp_path / "config.json").write_text('{"hidden_size": 768}')
    teacher = MiniLMTeacher(encoder=tmp_path)
    assert teacher.dim == 768
    assert teacher.embed([]).shape == (0, 768)
    assert teacher.features([]).shape[0] == 0


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


def test_teacher_key_names_the_encoder_and_its_rate() -> None:
    """Teachers of different encoders or fine-tuning rates never share a cache folder."""
    data = Dataset("SNIPS", [("play jazz", "PlayMusic")], [])
    parse = build_parser().parse_args
    minilm = teacher_key(data, parse([]))
    assert minilm.startswith("snips-minilm-ft1-e15-s0-")
    mpnet = parse(["--teacher-encoder", "/m/all-mpnet-base-v2", "--finetune-lr", "5e-5"])
    assert teacher_key(data, mpnet) == minilm.replace("minilm-ft1", "all-mpnet-base-v2-ft1-lr5e-05")
    # The rate of a frozen encoder changes nothing, so it stays out of the key.
    frozen = parse(["--finetune", "0", "--finetune-lr", "5e-5"])
    assert teacher_key(data, frozen) == minilm.replace("ft1", "ft0")
    # Per data set: SNIPS gets mpnet at 5e-5, HWU64 keeps MiniLM at its 1e-4.
    mixed = parse(
        ["--teacher-encoder", "snips=/m/all-mpnet-base-v2", "--finetune-lr", "snips=5e-5"]
    )
    assert teacher_key(data, mixed) == teacher_key(data, mpnet)
    hwu = Dataset("HWU64", data.train, [])
    assert teacher_key(hwu, mixed) == teacher_key(hwu, parse([]))
    assert teacher_label(mixed, ["snips", "hwu64"]) == "minilm, all-mpnet-base-v2 on snips"
    assert teacher_label(mpnet, ["snips"]) == "all-mpnet-base-v2"
    assert teacher_label(parse([]), ["snips"]) == "minilm"


def test_per_dataset_options_are_checked_before_a_run(tmp_path: Path) -> None:
    parse = build_parser().parse_args
    assert check_per_dataset(parse([]), ["snips", "hwu64"]) is None
    assert check_per_dataset(parse(["--finetune", "snips=one"]), ["snips"]) == (
        "--finetune: expected N or snips=N,hwu64=M, got 'snips=one'"
    )
    # A data set the option leaves out is not checked against it.
    assert check_per_dataset(parse(["--finetune-lr", "hwu64=fast"]), ["snips"]) is None
    assert check_per_dataset(parse(["--finetune-lr", "hwu64=fast"]), ["hwu64"]) == (
        "--finetune-lr: expected a rate or snips=R,hwu64=S, got 'hwu64=fast'"
    )
    assert check_per_dataset(parse(["--teacher-encoder", f"snips={tmp_path}"]), ["snips"]) == (
        f"--teacher-encoder: {tmp_path} is not a sentence-transformers model folder"
    )
    (tmp_path / "config.json").write_text("{}")
    assert check_per_dataset(parse(["--teacher-encoder", str(tmp_path)]), ["snips"]) is None


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
