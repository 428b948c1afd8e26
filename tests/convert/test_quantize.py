"""The sparse-input export: the int8 file computes what the dense Keras model computes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from agent.featurize import Featurizer, FeaturizerConfig, tokenize
from agent.tflite import MAX_SLOTS, SLOT_STEP, SparseRunner
from convert.build import split
from convert.distill import FitConfig, fit
from convert.model import MlpConfig, build_mlp
from convert.quantize import (
    frequent_words,
    logit_range,
    sparse_samples,
    sparse_weights,
    to_tflite,
)
from convert.quiet import silenced
from convert.rewrite import swap_output_layer
from convert.sentences import Example, expand_negatives, expand_spec
from convert.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


def example_split() -> tuple[list[Example], list[Example], list[str]]:
    """The English example's train and held-out sentences and its labels (and the seed set
    for the model about to be built on them)."""
    keras.utils.set_random_seed(0)
    spec = load_spec(ROOT / "examples/en/smart-home.yaml")
    examples = expand_spec(spec, 200, 0) + expand_negatives(spec, 300, 0)
    train, held = split(examples, 0.2, 0)
    return train, held, sorted({e.intent for e in examples})


class Trained:
    """A quickly trained student on the English example, with its held-out sentences."""

    def __init__(self) -> None:
        train, held, labels = example_split()
        self.featurizer = Featurizer(FeaturizerConfig(dim=4096))
        x_train = self.featurizer.transform([e.text for e in train])
        y_train = np.array([labels.index(e.intent) for e in train], np.int32)
        self.model = build_mlp(4096, len(labels), MlpConfig(hidden=96))
        fit(self.model, x_train, y_train, FitConfig(epochs=8), seed=0)
        self.train_texts = [e.text for e in train]
        self.features = [self.featurizer.occurrences(tokenize(e.text)) for e in train]
        self.representative = self.features[:300]
        self.texts = [e.text for e in held]
        self.dense = self.featurizer.transform(self.texts)

    def keras_probabilities(self, dense: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(keras.ops.softmax(self.model(dense, training=False)))

    def runner(self, mode: str, rows: Featurizer | None = None) -> tuple[SparseRunner, bytes]:
        content = self.export(mode, rows)

        def new_interpreter() -> tf.lite.Interpreter:
            with silenced():
                return tf.lite.Interpreter(model_content=content, num_threads=1)

        return SparseRunner(new_interpreter), content

    def export(self, mode: str, rows: Featurizer | None = None) -> bytes:
        if rows is None:
            return to_tflite(self.model, self.representative, mode)  # type: ignore[arg-type]
        representative = [rows.occurrences(tokenize(t)) for t in self.train_texts[:300]]
        return to_tflite(self.model, representative, mode, rows)  # type: ignore[arg-type]

    def sparse_probabilities(
        self, runner: SparseRunner, texts: list[str], featurizer: Featurizer | None = None
    ) -> np.ndarray:
        featurizer = featurizer or self.featurizer
        return np.stack([runner.probabilities(featurizer.occurrences(tokenize(t))) for t in texts])


@pytest.fixture(scope="module")
def trained() -> Trained:
    return Trained()


def test_rescaled_weights_compute_the_same_function(trained: Trained) -> None:
    # Rescaling the hidden units' kernel columns (for one int8 scale) is exact in float.
    kernel, bias, out_kernel, out_bias = (
        w.astype(np.float64) for w in sparse_weights(trained.model)
    )
    logits = np.maximum(trained.dense @ kernel + bias, 0) @ out_kernel + out_bias
    expected = keras.ops.convert_to_numpy(trained.model(trained.dense, training=False))
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    # The kernel spans [-128/127, 1]: int8 scale 1/127 with zero point 0.
    assert (kernel.min(), kernel.max()) == pytest.approx((-128 / 127, 1.0))


def test_float32_sparse_model_equals_keras(trained: Trained) -> None:
    runner, _ = trained.runner("float32")
    assert (runner.padding, runner.classes) == (4096, trained.model.output_shape[-1])
    # The example's commands fill up to ~150 slots: blocks of 32 up to 512 hold them all.
    assert max(len(f.ids) for f in trained.features) <= 160
    got = trained.sparse_probabilities(runner, trained.texts)
    np.testing.assert_allclose(got, trained.keras_probabilities(trained.dense), atol=1e-5)


def test_int8_sparse_model_matches_dense_float(trained: Trained) -> None:
    runner, content = trained.runner("int8")
    kernel = next(
        t
        for t in runner.interpreter.get_tensor_details()
        if t["shape"].tolist() == [runner.padding + 1, trained.model.get_layer("hidden").units]
    )
    assert kernel["dtype"] == np.int8
    assert kernel["quantization"] == pytest.approx((1 / 127, 0))
    float_content = trained.export("float32")
    ops = {op["op_name"] for op in runner.interpreter._get_ops_details()}
    assert "BATCH_MATMUL" not in ops and "FULLY_CONNECTED" in ops
    assert len(content) * 3 <= len(float_content)
    got = trained.sparse_probabilities(runner, trained.texts)
    want = trained.keras_probabilities(trained.dense)
    assert len(trained.texts) >= 300
    # Quantization error: a few int8 steps of the output (1/256 each) on average, never
    # a flipped decision on more than 1% of real sentences.
    assert np.mean(np.abs(got - want)) < 0.01
    assert np.max(np.abs(got - want)) < 0.15
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.99


def test_long_sentence_keeps_its_first_occurrences(trained: Trained) -> None:
    runner, _ = trained.runner("float32")
    words = " ".join(f"kitchen{i} light{i} bedroom{i}" for i in range(40))
    features = trained.featurizer.occurrences(tokenize(words))
    assert len(features.ids) > MAX_SLOTS == runner.max_slots
    # What the model sees: the first occurrences, at the full sentence's scale.
    truncated = np.zeros((1, 4096), np.float32)
    kept = slice(0, MAX_SLOTS)
    np.add.at(truncated[0], features.ids[kept], features.weights[kept] * features.scale)
    np.testing.assert_allclose(
        runner.probabilities(features), trained.keras_probabilities(truncated)[0], atol=1e-5
    )
    # Every block size gives the dense model's answer, and the slots a longer sentence
    # used are cleared for the next, shorter one in the same block.
    fresh, _ = trained.runner("float32")
    assert fresh.blocks == (SLOT_STEP,)  # the others are made when first needed
    for n in (1, SLOT_STEP - 1, SLOT_STEP, SLOT_STEP + 1, 100, MAX_SLOTS):
        part = features._replace(ids=features.ids[-n:], weights=features.weights[-n:])
        dense = np.zeros((1, 4096), np.float32)
        np.add.at(dense[0], part.ids, part.weights * part.scale)
        want = trained.keras_probabilities(dense)[0]
        np.testing.assert_allclose(runner.probabilities(part), want, atol=1e-5)
        np.testing.assert_array_equal(runner.probabilities(part), fresh.probabilities(part))
    short = trained.featurizer.occurrences(tokenize("turn on the kitchen light"))
    np.testing.assert_array_equal(runner.probabilities(short), fresh.probabilities(short))
    assert fresh.blocks == (32, 64, 96, 128, 512)  # "turn on the kitchen light": 96


def test_calibration_feeds_sentences_as_the_runtime_does(trained: Trained) -> None:
    short = trained.featurizer.occurrences(tokenize("lights on"))
    long = short._replace(ids=np.arange(40, dtype=np.int32), weights=np.ones(40, np.float32))
    (ids, weights, scale), (ids2, weights2, _) = sparse_samples([short, long], 4096)
    # One size for all (the block that holds the longest), padded with bucket dim at 0.
    assert ids.shape == weights.shape == ids2.shape == (1, 2 * SLOT_STEP)
    n = len(short.ids)
    assert ids[0, :n].tolist() == short.ids.tolist() and set(ids[0, n:]) == {4096}
    assert weights[0, :n].tolist() == short.weights.tolist() and weights[0, n:].sum() == 0
    assert scale.tolist() == [[np.float32(short.scale)]]
    assert ids2[0, :40].tolist() == list(range(40)) and weights2[0, :40].sum() == 40


def test_dense_input_model_is_refused(trained: Trained) -> None:
    # A format-1 file (one dense [1, dim] input) cannot be fed sparse vectors.
    converter = tf.lite.TFLiteConverter.from_keras_model(trained.model)
    with silenced():
        interpreter = tf.lite.Interpreter(model_content=converter.convert())
        interpreter.allocate_tensors()
    with pytest.raises(ValueError, match="not an intent model of this version"):
        SparseRunner(lambda: interpreter)


def test_output_layer_is_swapped_into_the_fast_shape(trained: Trained) -> None:
    # tflite_runtime's x86 int8 kernel is slow for one row against many channels; the
    # export swaps the output layer into many rows against one channel (convert.rewrite).
    runner, content = trained.runner("int8")
    classes = trained.model.output_shape[-1]
    tensors = {t["index"]: t for t in runner.interpreter.get_tensor_details()}
    ops = [o for o in runner.interpreter._get_ops_details() if o["op_name"] != "DELEGATE"]
    fully_connected = [op for op in ops if op["op_name"] == "FULLY_CONNECTED"]
    shapes = [tensors[op["outputs"][0]]["shape"].tolist() for op in fully_connected]
    assert shapes == [[96, 1], [classes, 1]]
    # The bias is folded into the kernel (a constant activation reads it): no ADD after.
    assert [op["op_name"] for op in ops[-4:]] == [
        "CONCATENATION",
        "FULLY_CONNECTED",
        "RESHAPE",
        "SOFTMAX",
    ]
    output_kernel = tensors[fully_connected[-1]["inputs"][0]]
    assert output_kernel["shape"].tolist() == [classes, 96 + 1]
    assert len(output_kernel["quantization_parameters"]["scales"]) == 1
    # Only int8 files are rewritten; a file without the slow shape comes back unchanged.
    assert swap_output_layer(content) == content
    float_runner, _ = trained.runner("float32")
    float_ops = [o["op_name"] for o in float_runner.interpreter._get_ops_details()]
    assert [op for op in float_ops if op != "DELEGATE"][-2:] == ["FULLY_CONNECTED", "SOFTMAX"]


def test_logit_range_clips_only_what_softmax_cannot_show() -> None:
    # A confident model's logits (as HWU64's student: the top near 10, the rest far under).
    rng = np.random.default_rng(0)
    logits = rng.normal(-8.0, 3.0, (500, 64))
    logits[np.arange(500), rng.integers(0, 64, 500)] = rng.uniform(2.0, 16.0, 500)
    low, high = logit_range(logits)
    top = logits.max(axis=1)
    assert high == pytest.approx(top.max())
    assert low == pytest.approx(top.min() - np.log(256 * 64)) and low > logits.min() + 5
    clipped = np.clip(logits, low, high)
    assert np.array_equal(clipped.argmax(1), logits.argmax(1))
    moved = keras.ops.softmax(clipped) - keras.ops.softmax(logits)
    assert float(np.max(np.abs(keras.ops.convert_to_numpy(moved)))) < 1 / 256
    # Logits that never reach that far keep their own lowest value.
    assert logit_range(np.array([[1.0, -2.0, 0.5]])) == (-2.0, 1.0)


def test_int8_file_rounds_logits_in_the_calibration_range(trained: Trained) -> None:
    runner, _ = trained.runner("int8")
    tensors = {t["index"]: t for t in runner.interpreter.get_tensor_details()}
    softmax = next(o for o in runner.interpreter._get_ops_details() if o["op_name"] == "SOFTMAX")
    step, zero = tensors[softmax["inputs"][0]]["quantization"]
    calibrated = trained.model(trained.featurizer.transform(trained.train_texts[:300]))
    low, high = logit_range(keras.ops.convert_to_numpy(calibrated))
    assert (-128 - zero) * step == pytest.approx(low, abs=step)
    assert (127 - zero) * step == pytest.approx(high, abs=step)


def test_float16_model_is_half_the_size_and_close_to_keras(trained: Trained) -> None:
    runner, content = trained.runner("float16")
    assert len(content) * 1.8 <= len(trained.export("float32"))
    kernel = next(
        t
        for t in runner.interpreter.get_tensor_details()
        if t["shape"].tolist() == [runner.padding + 1, trained.model.get_layer("hidden").units]
    )
    assert kernel["dtype"] == np.float16
    got = trained.sparse_probabilities(runner, trained.texts)
    want = trained.keras_probabilities(trained.dense)
    assert np.max(np.abs(got - want)) < 0.01
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.995


def test_word_rows_feed_fewer_slots_for_the_same_answers(trained: Trained) -> None:
    words = frequent_words(trained.train_texts, 200)
    assert words[:3] == ("the", "in", "light")  # most frequent first
    rows = Featurizer(replace(trained.featurizer.config, words=words))
    # A word the rows do not have keeps its n-grams: "lampshade" is not in the spec.
    texts = [*trained.texts, "turn on the kitchen lampshade"]
    runner, _ = trained.runner("float32", rows)
    assert runner.padding == 4096 + 200 == rows.config.padding
    want = trained.keras_probabilities(trained.featurizer.transform(texts))
    np.testing.assert_allclose(trained.sparse_probabilities(runner, texts, rows), want, atol=1e-5)
    # The norm is the n-grams' either way; the slots are a fraction.
    plain = [trained.featurizer.occurrences(tokenize(t)) for t in texts]
    fewer = [rows.occurrences(tokenize(t)) for t in texts]
    assert [f.scale for f in fewer] == [f.scale for f in plain]
    assert sum(len(f.ids) for f in fewer) * 3 < sum(len(f.ids) for f in plain)
    assert max(f.ids.max() for f in fewer) < rows.config.padding
    # int8: the word rows share the first layer's one quantization scale.
    runner, _ = trained.runner("int8", rows)
    got = trained.sparse_probabilities(runner, texts, rows)
    assert np.mean(np.abs(got - want)) < 0.01
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.99


class WordTrained(Trained):
    """The same student with a word-vector branch (random vectors: the export's arithmetic
    is under test here, not what the vectors know)."""

    def __init__(self) -> None:
        train, held, labels = example_split()
        words = sorted({w for e in train for w in tokenize(e.text)})
        # Every tenth word is left out, so that held-out sentences have unknown words.
        lexicon = tuple(w for i, w in enumerate(words) if i % 10)
        config = FeaturizerConfig(dim=4096, lexicon=lexicon, window=3, positions=8)
        self.featurizer = Featurizer(config)
        vectors = np.random.default_rng(0).normal(size=(config.table_rows, 24))
        vectors[:2] = 0.0
        self.model = build_mlp(
            4096,
            len(labels),
            MlpConfig(hidden=96, word_filters=32, word_projection=16),
            word_vectors=vectors,
            window=config.window,
            positions=config.positions,
        )
        x_train = self.inputs([e.text for e in train])
        y_train = np.array([labels.index(e.intent) for e in train], np.int32)
        fit(self.model, x_train, y_train, FitConfig(epochs=8), seed=0)
        self.train_texts = [e.text for e in train]
        self.features = [self.featurizer.occurrences(tokenize(t)) for t in self.train_texts]
        self.representative = self.features[:300]
        # Edge cases: nothing, only unknown words, more words than positions.
        edges = ["", "zzz qqq", "turn on the kitchen light and the bedroom light and the lamp"]
        self.texts = [e.text for e in held] + edges
        self.dense = self.inputs(self.texts)

    def inputs(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.stack([self.featurizer.word_ids(tokenize(t)) for t in texts])
        return self.featurizer.transform(texts), ids

    def keras_probabilities(self, dense: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(keras.ops.softmax(self.model(dense, training=False)))

    def export(self, mode: str, rows: Featurizer | None = None) -> bytes:
        return to_tflite(self.model, self.representative, mode, self.featurizer)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def word_trained() -> WordTrained:
    return WordTrained()


def test_word_branch_float32_model_equals_keras(word_trained: WordTrained) -> None:
    runner, _ = word_trained.runner("float32")
    assert runner.windows == 8 * 3
    got = word_trained.sparse_probabilities(runner, word_trained.texts)
    np.testing.assert_allclose(got, word_trained.keras_probabilities(word_trained.dense), atol=1e-5)


def test_word_branch_int8_model_is_integer_and_matches_float(word_trained: WordTrained) -> None:
    runner, content = word_trained.runner("int8")
    rows = 3 * word_trained.featurizer.config.table_rows
    table = next(
        t for t in runner.interpreter.get_tensor_details() if t["shape"].tolist() == [rows, 32]
    )
    assert table["dtype"] == np.int8
    assert len(content) * 3 <= len(word_trained.export("float32"))
    got = word_trained.sparse_probabilities(runner, word_trained.texts)
    want = word_trained.keras_probabilities(word_trained.dense)
    assert np.mean(np.abs(got - want)) < 0.01
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.99


def test_a_word_branch_model_needs_the_lexicons_windows(word_trained: WordTrained) -> None:
    runner, _ = word_trained.runner("float32")
    plain = Featurizer(replace(word_trained.featurizer.config, lexicon=()))
    with pytest.raises(ValueError, match="reads words through its lexicon"):
        runner.raw(plain.occurrences(["lamp"]))
