"""The student's lexicon: word vectors folded into first-layer rows compute what Keras does."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from agent.featurize import Featurizer, FeaturizerConfig, tokenize
from agent.tflite import SparseRunner
from convert.build import split
from convert.distill import FitConfig, fit
from convert.lexicon import Lexicon, encode, fold, vocabulary
from convert.model import MlpConfig, build_mlp
from convert.quantize import to_tflite
from convert.quiet import silenced
from convert.sentences import expand_negatives, expand_spec
from convert.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
WIDTH = 24


def toy_vectors(words: list[str]) -> np.ndarray:
    """Deterministic unit vectors in which words sharing their first three letters are
    close (a stand-in for MiniLM, which CI does not install): enough structure to learn."""
    out = np.zeros((len(words), WIDTH), np.float32)
    for row, word in enumerate(words):
        stem = np.random.default_rng(sum(map(ord, word[:3]))).normal(size=WIDTH)
        own = np.random.default_rng(sum(map(ord, word))).normal(size=WIDTH)
        out[row] = stem + 0.3 * own
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_features_are_the_weighted_mean_of_the_words_vectors() -> None:
    lexicon = Lexicon(("kitchen", "light"), np.array([[1, 0], [0, 1]], np.float32), 2.0)
    got = lexicon.features(["Kitchen light, light!", "hello there"])
    np.testing.assert_allclose(got, [[2 / 3, 4 / 3], [0, 0]])
    assert lexicon.featurizer(FeaturizerConfig(dim=64)).lexicon == ("kitchen", "light")
    assert vocabulary(["Turn on the light", "the LIGHT off"]) == [
        "light",
        "off",
        "on",
        "the",
        "turn",
    ]


def test_fold_gives_each_word_its_projected_row() -> None:
    rng = np.random.default_rng(0)
    kernel, vectors = rng.normal(size=(10 + 3, 5)), rng.normal(size=(4, 3))
    folded = fold(kernel, vectors)
    assert folded.shape == (10 + 4, 5)
    np.testing.assert_array_equal(folded[:10], kernel[:10])
    np.testing.assert_allclose(folded[10:], vectors @ kernel[10:])


class Trained:
    """A student trained on the English example with n-grams and a toy lexicon."""

    def __init__(self) -> None:
        keras.utils.set_random_seed(0)
        spec = load_spec(ROOT / "examples/en/smart-home.yaml")
        examples = expand_spec(spec, 150, 0) + expand_negatives(spec, 200, 0)
        train, held = split(examples, 0.2, 0)
        labels = sorted({e.intent for e in examples})
        texts = [e.text for e in train]
        self.lexicon = encode(vocabulary(texts), toy_vectors, 2.0)
        base = FeaturizerConfig(dim=1024)
        self.featurizer = Featurizer(self.lexicon.featurizer(base))
        x_train = self.dense(texts)
        y_train = np.array([labels.index(e.intent) for e in train], np.int32)
        self.model = build_mlp(1024 + WIDTH, len(labels), MlpConfig(hidden=64))
        fit(self.model, x_train, y_train, FitConfig(epochs=6), seed=0)
        self.representative = [self.featurizer.occurrences(tokenize(t)) for t in texts[:300]]
        # Held-out sentences, and words the lexicon has that no training sentence has.
        self.texts = [e.text for e in held] + ["turn on the kitchen light please now"]

    def dense(self, texts: list[str]) -> np.ndarray:
        return np.hstack([self.featurizer.transform(texts), self.lexicon.features(texts)])

    def runner(self, mode: str) -> tuple[SparseRunner, bytes]:
        content = to_tflite(self.model, self.representative, mode, self.lexicon.vectors)  # type: ignore[arg-type]

        def new_interpreter() -> tf.lite.Interpreter:
            with silenced():
                return tf.lite.Interpreter(model_content=content, num_threads=1)

        return SparseRunner(new_interpreter), content

    def probabilities(self, runner: SparseRunner) -> np.ndarray:
        return np.stack(
            [runner.probabilities(self.featurizer.occurrences(tokenize(t))) for t in self.texts]
        )

    def keras_probabilities(self) -> np.ndarray:
        logits = self.model(self.dense(self.texts), training=False)
        return keras.ops.convert_to_numpy(keras.ops.softmax(logits))


@pytest.fixture(scope="module")
def trained() -> Trained:
    return Trained()


def test_the_folded_float_model_equals_keras(trained: Trained) -> None:
    runner, _ = trained.runner("float32")
    # The lexicon's rows sit between the buckets and the padding row.
    assert runner.padding == 1024 + len(trained.lexicon.words) == trained.featurizer.config.padding
    np.testing.assert_allclose(
        trained.probabilities(runner), trained.keras_probabilities(), atol=1e-5
    )
    # The lexicon matters: without its rows the answers change.
    plain = Featurizer(FeaturizerConfig(dim=1024))
    words = tokenize(trained.texts[0])
    assert not np.allclose(
        runner.probabilities(plain.occurrences(words)),
        runner.probabilities(trained.featurizer.occurrences(words)),
        atol=1e-3,
    )


def test_the_folded_int8_model_is_full_integer_and_agrees(trained: Trained) -> None:
    runner, _ = trained.runner("int8")
    hidden = trained.model.get_layer("hidden").units
    kernel = next(
        t
        for t in runner.interpreter.get_tensor_details()
        if t["shape"].tolist() == [runner.padding + 1, hidden]
    )
    assert kernel["dtype"] == np.int8
    got, want = trained.probabilities(runner), trained.keras_probabilities()
    assert len(trained.texts) >= 250
    assert np.mean(np.abs(got - want)) < 0.01
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.99
