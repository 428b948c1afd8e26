"""Export a Keras classifier to TFLite: float32, float16 weights, or full-integer int8.

Full-integer int8 calibrates every activation range on a representative set of real
feature vectors, so the Pi runs only int8 kernels and the file is about a quarter of
the float one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from convert.quiet import silenced

Mode = Literal["float32", "float16", "int8"]
MODES: tuple[Mode, ...] = ("float32", "float16", "int8")


def to_tflite(
    model: keras.Model, representative: np.ndarray, mode: Mode, *, sparse: bool = False
) -> bytes:
    """Convert ``model`` (features -> logits) to a TFLite flatbuffer that outputs probabilities."""
    dim = int(model.input_shape[-1])
    features = keras.Input((dim,), batch_size=1, name="features")
    probabilities = keras.layers.Softmax(name="probabilities")(model(features))
    converter = tf.lite.TFLiteConverter.from_keras_model(keras.Model(features, probabilities))
    optimizations = []
    if mode != "float32":
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":

        def samples() -> Iterator[list[np.ndarray]]:
            for row in representative:
                yield [row[None, :].astype(np.float32)]

        converter.representative_dataset = samples
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
    with silenced():
        return converter.convert()
