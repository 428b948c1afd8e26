"""Export a trained classifier to TFLite with a sparse first layer: float32, float16 weights,
or full-integer int8.

Training stays dense in Keras (fast on a batch). The exported graph instead takes a
sentence as its feature occurrences (:class:`agent.featurize.Occurrences`): the buckets of
its word n-grams (int32 ``[1, Kw]``) and character n-grams (``[1, Kc]``), padded with the
bucket ``dim`` whose kernel row is zero, and the float ``scale`` that normalizes their sum.
It gathers one kernel row per occurrence and sums them with a *constant* weight vector
(1 for a word n-gram, ``char_weight`` for a character n-gram), then multiplies by the
scale: the dense product, at ``(Kw + Kc) x hidden`` multiply-adds instead of
``dim x hidden``.

The constant weights are what make it fast in tflite_runtime 2.14: the sum becomes a
TRANSPOSE (which XNNPACK takes) and a FULLY_CONNECTED of ``hidden`` rows against one
constant output channel, a shape its x86 int8 kernel runs quickly, where the previous
graph (bucket ids with per-sentence float weights, one BATCH_MATMUL) ran a slow one:
4096 x 96, K 128: 84 -> ~22 µs per invoke on this machine (bench/latency.py). ``Kw`` and
``Kc`` are fixed in the file (:func:`choose_sizes`).

Full-integer int8 calibrates every activation range on a representative set of real
sentences, so the Pi runs only integer kernels and the file is about a quarter of the
float one. The int8 output layer is then swapped into the same fast shape
(:mod:`convert.rewrite`): 151 classes, 220-238 -> 75-103 µs per invoke (bench/latency.py).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from agent.featurize import Occurrences
from convert.quiet import silenced
from convert.rewrite import swap_output_layer

Mode = Literal["float32", "float16", "int8"]
MODES: tuple[Mode, ...] = ("float32", "float16", "int8")

SLOT_STEP = 16
"""Sizes are multiples of this: padding costs as much as a feature, so round up finely."""
MAX_WORDS = 256
MAX_CHARS = 1024
"""The most occurrences a model takes per sentence. Spoken commands have 5-30 word and
15-120 character n-grams; the public data sets' test sentences up to ~60 and ~300."""


def _size(counts: list[int], cap: int) -> int:
    need = float(np.percentile(counts, 99)) if counts else 0.0
    return int(min(cap, max(SLOT_STEP, -(-int(np.ceil(need)) // SLOT_STEP) * SLOT_STEP)))


def choose_sizes(representative: Sequence[Occurrences]) -> tuple[int, int]:
    """``(Kw, Kc)``, the word and character occurrences fed per sentence: the 99th
    percentile of the representative sentences', rounded up to a multiple of 16.

    The first layer's cost grows linearly in ``Kw + Kc``, so a spec of short commands
    gets small sizes; the rare longer sentence keeps its first occurrences.
    """
    return (
        _size([len(r.words) for r in representative], MAX_WORDS),
        _size([len(r.chars) for r in representative], MAX_CHARS),
    )


def dense_layers(model: keras.Model) -> tuple[keras.layers.Dense, keras.layers.Dense]:
    """The hidden (ReLU) and output layers of a :func:`convert.model.build_mlp` network."""
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if len(dense) != 2 or dense[0].activation is not keras.activations.relu:
        raise ValueError(
            f"{model.name}: expected one ReLU hidden Dense layer and one output Dense layer"
        )
    return dense[0], dense[1]


def sparse_weights(model: keras.Model) -> tuple[np.ndarray, ...]:
    """``(kernel, bias, out_kernel, out_bias)`` with every hidden unit rescaled so that its
    kernel column spans as much of ``[-128/127, 1]`` as it can.

    ReLU commutes with a positive scale, so dividing column ``j`` (and its bias) by ``a_j``
    and multiplying row ``j`` of the output kernel by ``a_j`` computes the same function.
    It matters for int8 twice over. The gathered rows share one quantization scale
    (GATHER keeps its input's) where the dense layer had one per hidden unit; equalized
    columns all use the full int8 range, as per-channel scales would. And a range of
    exactly ``[-128 s, 127 s]`` gives the kernel the zero point 0, which int8
    FULLY_CONNECTED requires of its weights (the gathered rows) and which keeps the
    padding row exactly zero.
    """
    hidden, output = dense_layers(model)
    kernel, bias = (np.asarray(w, np.float64) for w in hidden.get_weights())
    out_kernel, out_bias = (np.asarray(w, np.float64) for w in output.get_weights())
    top = kernel.max(axis=0)
    bottom = -kernel.min(axis=0)
    with np.errstate(divide="ignore"):
        scale = np.minimum(1.0 / top, (128 / 127) / bottom)  # inf where one side is empty
    scale[~np.isfinite(scale)] = 1.0  # a unit pruned to nothing: leave it alone
    return (
        (kernel * scale).astype(np.float32),
        (bias * scale).astype(np.float32),
        (out_kernel / scale[:, None]).astype(np.float32),
        out_bias.astype(np.float32),
    )


def padded(ids: np.ndarray, size: int, pad: int) -> np.ndarray:
    """``ids`` as a ``[1, size]`` int32 row: cut to ``size``, or padded with ``pad``."""
    row = np.full((1, size), pad, np.int32)
    n = min(len(ids), size)
    row[0, :n] = ids[:n]
    return row


def sparse_samples(
    representative: Sequence[Occurrences], sizes: tuple[int, int], dim: int
) -> Iterator[list[np.ndarray]]:
    """Calibration inputs: each sentence as the runtime would feed it."""
    for features in representative:
        yield [
            padded(features.words, sizes[0], dim),
            padded(features.chars, sizes[1], dim),
            np.array([[features.scale]], np.float32),
        ]


def to_tflite(
    model: keras.Model,
    representative: Sequence[Occurrences],
    mode: Mode,
    *,
    char_weight: float,
    sizes: tuple[int, int] | None = None,
) -> bytes:
    """Convert ``model`` (dense features -> logits) to a TFLite flatbuffer from a sentence's
    feature occurrences to probabilities.

    ``representative`` holds real sentences' features (training sentences): they calibrate
    the int8 ranges and, unless ``sizes`` is given, choose ``(Kw, Kc)``. ``char_weight`` is
    the featurizer's (it is folded into the graph as a constant).
    """
    if sizes is None:
        sizes = choose_sizes(representative)
    kernel, bias, out_kernel, out_bias = sparse_weights(model)
    dim, hidden = kernel.shape
    # Row ``dim`` is the padding: zero, so a padded slot adds nothing (exactly, in int8 too:
    # the equalized kernel has zero point 0).
    padded_kernel = np.vstack([kernel, np.zeros((1, hidden), np.float32)])
    weights = np.concatenate(
        [np.ones(sizes[0], np.float32), np.full(sizes[1], char_weight, np.float32)]
    )[None, :]

    @tf.function(
        input_signature=[
            tf.TensorSpec([1, sizes[0]], tf.int32, name="words"),
            tf.TensorSpec([1, sizes[1]], tf.int32, name="chars"),
            tf.TensorSpec([1, 1], tf.float32, name="scale"),
        ],
        autograph=False,  # straight-line code; nothing for AutoGraph to rewrite
    )
    def classify(words: tf.Tensor, chars: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
        ids = tf.concat([words[0], chars[0]], axis=0)  # [K]
        rows = tf.gather(tf.constant(padded_kernel), ids)  # [K, hidden]
        # A constant left operand: the converter makes it TRANSPOSE + FULLY_CONNECTED
        # with one constant output channel, the fast shape (see the module docstring).
        summed = tf.matmul(tf.constant(weights), rows)  # [1, hidden]
        activations = tf.nn.relu(summed * scale + bias)
        logits = tf.matmul(activations, tf.constant(out_kernel)) + out_bias
        return tf.nn.softmax(logits, name="probabilities")

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [classify.get_concrete_function()], classify
    )
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        converter.representative_dataset = lambda: sparse_samples(representative, sizes, dim)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # The scale stays a float input, quantized by the graph's first op.
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.int8
    with silenced():
        content = converter.convert()
    return swap_output_layer(content) if mode == "int8" else content
