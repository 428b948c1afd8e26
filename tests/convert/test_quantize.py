"""The sparse-input export: the int8 file computes what the dense Keras model computes."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from agent.featurize import Featurizer, FeaturizerConfig, tokenize
from agent.tflite import SparseRunner, sparse_input, strongest
from convert.build import split
from convert.distill import FitConfig, fit
from convert.model import MlpConfig, build_mlp
from convert.quantize import choose_k, sparse_weights, to_tflite
from convert.quiet import silenced
from convert.sentences import expand_negatives, expand_spec
from convert.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


class Trained:
    """A quickly trained student on the English example, with its held-out sentences."""

    def __init__(self) -> None:
        keras.utils.set_random_seed(0)
        spec = load_spec(ROOT / "examples/en/smart-home.yaml")
        examples = expand_spec(spec, 200, 0) + expand_negatives(spec, 300, 0)
        train, held = split(examples, 0.2, 0)
        labels = sorted({e.intent for e in examples})
        self.featurizer = Featurizer(FeaturizerConfig(dim=4096))
        x_train = self.featurizer.transform([e.text for e in train])
        y_train = np.array([labels.index(e.intent) for e in train], np.int32)
        self.model = build_mlp(4096, len(labels), MlpConfig(hidden=96))
        fit(self.model, x_train, y_train, FitConfig(epochs=8), seed=0)
        self.representative = x_train[:300]
        self.texts = [e.text for e in held]
        self.dense = self.featurizer.transform(self.texts)

    def keras_probabilities(self, dense: np.ndarray) -> np.ndarray:
        return keras.ops.convert_to_numpy(keras.ops.softmax(self.model(dense, training=False)))

    def runner(self, mode: str) -> tuple[SparseRunner, bytes]:
        content = to_tflite(self.model, self.representative, mode)  # type: ignore[arg-type]
        with silenced():
            interpreter = tf.lite.Interpreter(model_content=content, num_threads=1)
            interpreter.allocate_tensors()
        return SparseRunner(interpreter), content

    def sparse_probabilities(self, runner: SparseRunner, texts: list[str]) -> np.ndarray:
        return np.stack(
            [runner.probabilities(*self.featurizer.sparse_words(tokenize(t))) for t in texts]
        )


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
    assert (runner.k, runner.dim, runner.classes) == (
        128,
        4096,
        trained.model.output_shape[-1],
    )
    got = trained.sparse_probabilities(runner, trained.texts)
    np.testing.assert_allclose(got, trained.keras_probabilities(trained.dense), atol=1e-5)


def test_int8_sparse_model_matches_dense_float(trained: Trained) -> None:
    runner, content = trained.runner("int8")
    kernel = next(
        t
        for t in runner.interpreter.get_tensor_details()
        if t["shape"].tolist() == [runner.dim, trained.model.get_layer("hidden").units]
    )
    assert kernel["dtype"] == np.int8
    assert kernel["quantization"] == pytest.approx((1 / 127, 0))
    float_content = to_tflite(trained.model, trained.representative, "float32")
    assert len(content) * 3 <= len(float_content)
    got = trained.sparse_probabilities(runner, trained.texts)
    want = trained.keras_probabilities(trained.dense)
    assert len(trained.texts) >= 300
    # Quantization error: a few int8 steps of the output (1/256 each) on average, never
    # a flipped decision on more than 1% of real sentences.
    assert np.mean(np.abs(got - want)) < 0.01
    assert np.max(np.abs(got - want)) < 0.15
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.99


def test_long_sentence_keeps_its_largest_weights(trained: Trained) -> None:
    runner, _ = trained.runner("float32")
    words = " ".join(f"kitchen{i} light{i} bedroom{i}" for i in range(40))
    index, weights = trained.featurizer.sparse_words(tokenize(words))
    assert len(index) > runner.k
    kept_index, kept_weights = strongest(index, weights, runner.k)
    assert len(kept_index) == runner.k
    assert kept_weights.min() >= np.sort(weights)[-runner.k]
    truncated = np.zeros((1, 4096), np.float32)
    truncated[0, kept_index] = kept_weights
    np.testing.assert_allclose(
        runner.probabilities(index, weights), trained.keras_probabilities(truncated)[0], atol=1e-5
    )
    # The padding slots the long sentence used are cleared for the next, short one.
    short = trained.featurizer.sparse_words(tokenize("turn on the kitchen light"))
    fresh, _ = trained.runner("float32")
    np.testing.assert_array_equal(runner.probabilities(*short), fresh.probabilities(*short))


def test_sparse_input_pads_with_zero_weights() -> None:
    ids, weights = sparse_input(np.array([7, 3]), np.array([0.5, 0.25], np.float32), 4)
    assert ids.tolist() == [7, 3, 0, 0]
    assert weights.tolist() == [0.5, 0.25, 0.0, 0.0]
    ids, weights = sparse_input(np.array([7, 3, 9]), np.array([0.1, 0.5, 0.3], np.float32), 2)
    assert sorted(ids.tolist()) == [3, 9]


def test_dense_input_model_is_refused(trained: Trained) -> None:
    # A format-1 file (one dense [1, dim] input) cannot be fed sparse vectors.
    converter = tf.lite.TFLiteConverter.from_keras_model(trained.model)
    with silenced():
        interpreter = tf.lite.Interpreter(model_content=converter.convert())
        interpreter.allocate_tensors()
    with pytest.raises(ValueError, match="not a sparse-input intent model"):
        SparseRunner(interpreter)


def test_k_holds_the_99th_percentile_of_real_sentences(trained: Trained) -> None:
    counts = np.count_nonzero(trained.dense, axis=1)
    k = choose_k(trained.dense)
    assert k == 128  # the example's commands touch 20-137 buckets
    assert np.mean(counts <= k) >= 0.99
    assert choose_k(np.ones((10, 4096), np.float32)) == 256  # capped
    assert choose_k(np.eye(8, 4096, dtype=np.float32)) == 32
