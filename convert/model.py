"""The student network: hashed n-gram vector -> one hidden layer -> intent logits, with an
optional word-vector branch beside it.

Kept deliberately small, and trained dense (fast on a batch); the export
(``convert/quantize.py``) turns the first layer into a gather of the ~100 kernel rows a
sentence touches, so on a Pi a command costs two small int8 matrix products.

The word branch reads the sentence's words through frozen pretrained word vectors (a
trained projection, then a convolution over a window of words and a max over positions).
The vectors carry what the n-grams cannot: that "latte" is a drink although the training
sentences order only "coffee". Everything it computes before the ReLU is linear in one
word per window offset, so the export folds it into one table row per word and offset.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf


@dataclass(frozen=True)
class MlpConfig:
    """Shape and regularization of a one-hidden-layer classifier."""

    hidden: int = 256
    input_dropout: float = 0.2
    dropout: float = 0.3
    word_filters: int = 128
    """Outputs of the word branch's convolution (used only when it has word vectors)."""
    word_projection: int = 128
    """Width the frozen word vectors are projected to before the convolution."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@keras.saving.register_keras_serializable(package="voice_agent")
class MaskedMaxPool(keras.layers.Layer):
    """Max over the positions that hold a word; 0 for a sentence without any (ReLU
    outputs are never negative, so a masked position cannot win)."""

    def call(self, inputs: Any) -> Any:
        values, ids = inputs
        mask = tf.cast(ids > 0, values.dtype)[..., None]
        return tf.reduce_max(values * mask, axis=1)


@keras.saving.register_keras_serializable(package="voice_agent")
class ZeroPadding(keras.layers.Layer):
    """Zeroes the vectors of padding positions, as the convolution's own padding is: a
    window reaching past the sentence then adds nothing for the missing word."""

    def call(self, inputs: Any) -> Any:
        values, ids = inputs
        return values * tf.cast(ids > 0, values.dtype)[..., None]


def build_mlp(
    dim: int,
    n_classes: int,
    config: MlpConfig,
    name: str = "student",
    word_vectors: np.ndarray | None = None,
    window: int = 3,
    positions: int = 16,
) -> keras.Model:
    """A Keras model from a ``dim``-float vector to ``n_classes`` logits; with
    ``word_vectors`` (``[table_rows, d]``: padding, unknown word, then the lexicon, as
    :class:`agent.featurize.FeaturizerConfig` numbers them) it takes ``[features, word
    ids]`` and has the word branch as well."""
    inputs = keras.Input((dim,), name="features")
    x = keras.layers.Dropout(config.input_dropout)(inputs)
    x = keras.layers.Dense(config.hidden, activation="relu", name="hidden")(x)
    if word_vectors is None:
        x = keras.layers.Dropout(config.dropout)(x)
        logits = keras.layers.Dense(n_classes, name="logits")(x)
        return keras.Model(inputs, logits, name=name)
    ids = keras.Input((positions,), dtype="int32", name="word_ids")
    rows, width = word_vectors.shape
    vectors = keras.layers.Embedding(rows, width, trainable=False, name="word_vectors")
    vectors.build((None, positions))
    vectors.set_weights([word_vectors.astype(np.float32)])
    w = keras.layers.Dropout(0.1)(vectors(ids))
    w = keras.layers.Dense(config.word_projection, name="word_projection")(w)
    w = ZeroPadding()([w, ids])
    w = keras.layers.Conv1D(
        config.word_filters, window, padding="same", activation="relu", name="word_conv"
    )(w)
    w = MaskedMaxPool()([w, ids])
    x = keras.layers.Concatenate()([x, w])
    x = keras.layers.Dropout(config.dropout)(x)
    logits = keras.layers.Dense(n_classes, name="logits")(x)
    return keras.Model([inputs, ids], logits, name=name)
