"""Export a trained classifier to TFLite with a sparse first layer: float32, float16 weights,
or full-integer int8.

Training stays dense in Keras (fast on a batch). The exported graph instead takes the
sentence as its touched buckets, ``ids`` (int32 ``[1, K]``) and ``weights`` (float32
``[1, K]``, quantized inside the int8 graph), gathers those rows of the first kernel and
multiplies them by the weights, so a sentence costs ``K x hidden`` multiply-adds instead
of ``dim x hidden`` (tflite_runtime 2.14 on x86: 8192 x 256 took 9 ms, 256 x 256 takes
0.3 ms). ``K`` is fixed in the file (:func:`choose_k`); ``agent.tflite.SparseRunner``
pads shorter sentences with zero weights and keeps the ``K`` largest weights of longer
ones.

Full-integer int8 calibrates every activation range on a representative set of real
sentences, so the Pi runs only integer kernels and the file is about a quarter of the
float one.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from agent.tflite import sparse_input
from convert.quiet import silenced

Mode = Literal["float32", "float16", "int8"]
MODES: tuple[Mode, ...] = ("float32", "float16", "int8")

MAX_K = 256
"""The most buckets a model takes per sentence. Spoken commands touch 20-140 (the example
specs' longest sentence: 137); the public data sets' test sentences a median of 84-115,
and 99.7% (SNIPS, the wordiest) to 99.94% (CLINC150) of them at most 256."""
MIN_K = 32


def choose_k(representative: np.ndarray) -> int:
    """``K``, the buckets fed per sentence: the power of two (32 to 256) that holds the
    99th percentile of the representative sentences' touched buckets.

    The first layer's cost grows linearly in K (the int8 product over the gathered rows
    dominates in tflite_runtime), so a spec of short commands gets a small K; the rare
    longer sentence keeps its K largest weights (words before character n-grams).
    """
    counts = np.count_nonzero(representative, axis=1)
    need = float(np.percentile(counts, 99)) if len(counts) else 0.0
    k = MIN_K
    while k < need and k < MAX_K:
        k *= 2
    return k


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
    exactly ``[-128 s, 127 s]`` gives the kernel the zero point 0: TensorFlow's own
    interpreter drops a nonzero zero point of BATCH_MATMUL's right operand, which
    tflite_runtime honours, and the build must score the numbers the Pi computes.
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


def sparse_samples(representative: np.ndarray, k: int) -> Iterator[list[np.ndarray]]:
    """Calibration inputs: each dense feature row as the ``(ids, weights)`` pair the
    runtime would feed for that sentence."""
    for row in representative:
        index = np.flatnonzero(row)
        ids, weights = sparse_input(index, row[index], k)
        yield [ids[None, :], weights[None, :]]


def to_tflite(
    model: keras.Model, representative: np.ndarray, mode: Mode, *, k: int | None = None
) -> bytes:
    """Convert ``model`` (dense features -> logits) to a TFLite flatbuffer from the sparse
    ``(ids, weights)`` of a sentence to probabilities.

    ``representative`` holds dense feature rows of real sentences (rows of the training
    matrix): they calibrate the int8 ranges and, unless ``k`` is given, choose K.
    """
    if k is None:
        k = choose_k(representative)
    kernel, bias, out_kernel, out_bias = sparse_weights(model)
    hidden = kernel.shape[1]

    @tf.function(
        input_signature=[
            tf.TensorSpec([1, k], tf.int32, name="ids"),
            tf.TensorSpec([1, k], tf.float32, name="weights"),
        ],
        autograph=False,  # straight-line code; nothing for AutoGraph to rewrite
    )
    def classify(ids: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
        rows = tf.gather(tf.constant(kernel), ids)  # [1, K, hidden]
        # BATCH_MATMUL, not FULLY_CONNECTED: FC wants its weights as [hidden, K], so the
        # gathered rows would need a TRANSPOSE (or a strided gather); in tflite_runtime
        # 2.14 that costs more than BATCH_MATMUL's own transpose of its right operand.
        summed = tf.linalg.matmul(tf.reshape(weights, [1, 1, k]), rows)  # [1, 1, hidden]
        activations = tf.nn.relu(tf.reshape(summed, [1, hidden]) + bias)
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
        converter.representative_dataset = lambda: sparse_samples(representative, k)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # The weights stay a float input, quantized by the graph's first op: TFLite's
        # QUANTIZE is cheaper than the same rounding and clipping done in numpy.
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.int8
    with silenced():
        return converter.convert()
