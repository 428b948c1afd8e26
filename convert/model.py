"""The student network: hashed n-gram vector -> one hidden layer -> intent logits.

Kept deliberately small, and trained dense (fast on a batch); the export
(``convert/quantize.py``) turns the first layer into a gather of the ~100 kernel rows a
sentence touches, so on a Pi a command costs two small int8 matrix products.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import keras


@dataclass(frozen=True)
class MlpConfig:
    """Shape and regularization of a one-hidden-layer classifier."""

    hidden: int = 256
    input_dropout: float = 0.2
    dropout: float = 0.3

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def build_mlp(dim: int, n_classes: int, config: MlpConfig, name: str = "student") -> keras.Model:
    """A Keras model from a ``dim``-float vector to ``n_classes`` logits."""
    inputs = keras.Input((dim,), name="features")
    x = keras.layers.Dropout(config.input_dropout)(inputs)
    x = keras.layers.Dense(config.hidden, activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(config.dropout)(x)
    logits = keras.layers.Dense(n_classes, name="logits")(x)
    return keras.Model(inputs, logits, name=name)
