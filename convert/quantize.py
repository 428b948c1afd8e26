"""Export a trained classifier to TFLite with a sparse first layer: float32, float16 weights,
or full-integer int8.

Training stays dense in Keras (fast on a batch). The exported graph instead takes a
sentence as its feature occurrences (:class:`agent.featurize.Occurrences`): the buckets of
its n-grams (int32 ``[1, K]``), their weights (float32 ``[1, K]``: 1 for a word n-gram,
``char_weight`` for a character n-gram) and the float ``scale`` that normalizes their sum.
It gathers one kernel row per occurrence, sums the rows weighted and multiplies by the
scale: the dense product, at ``K x hidden`` multiply-adds instead of ``dim x hidden``.

``K`` is left open in the file, and the runtime feeds each sentence in the smallest block
of 32 slots that holds it (:class:`agent.tflite.SparseRunner`), padded with the zero row
``padding`` (after the buckets and the word rows) at weight 0, so a sentence pays
for the occurrences it has. The weighted sum is written so that the converter makes it a
TRANSPOSE (which XNNPACK takes) and a FULLY_CONNECTED of ``hidden`` rows against one
output channel, the shape tflite_runtime 2.14's x86 int8 kernel runs fastest: its
integer products run at about 1.5 multiply-adds per ns on this machine, so the cost
follows ``K`` (bench/latency.py).

A model with a word-vector branch (``convert/model.py``) has a fourth input, the table
rows of each position's window of words (:meth:`agent.featurize.Featurizer.windows`,
fixed in size). Its projection and convolution are folded into one table per window offset
(:func:`word_table`), so the branch is a GATHER, a mean over each window, and a max over
positions with a ReLU: no multiply at run time, whatever the width of the vectors it
learned from.

Full-integer int8 calibrates every activation range on a representative set of real
sentences, so the Pi runs only integer kernels and the file is about a quarter of the
float one. The int8 output layer is then swapped into the same fast shape
(:mod:`convert.rewrite`): 151 classes, 220-238 -> 75-103 µs per invoke (bench/latency.py).
Its bias rides in the kernel and its logits are rounded once, in the range softmax can
show (:func:`logit_range`): the int8 HWU64 and CLINC150 students then disagree with their
float selves on 5 of 1,076 and 31 of 5,500 test sentences, where they did on 15-17 and 197.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Literal

import keras
import numpy as np
import tensorflow as tf

from agent.featurize import WORD_ROW_WEIGHT, Featurizer, Occurrences, tokenize
from agent.tflite import MAX_SLOTS, block_size
from convert.quiet import silenced
from convert.rewrite import swap_output_layer

Mode = Literal["float32", "float16", "int8"]
MODES: tuple[Mode, ...] = ("float32", "float16", "int8")


def dense_layers(model: keras.Model) -> tuple[keras.layers.Dense, keras.layers.Dense]:
    """The hidden (ReLU) and output layers of a :func:`convert.model.build_mlp` network."""
    named = {layer.name: layer for layer in model.layers}
    if "word_conv" in named:
        return named["hidden"], named["logits"]
    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    if len(dense) != 2 or dense[0].activation is not keras.activations.relu:
        raise ValueError(
            f"{model.name}: expected one ReLU hidden Dense layer and one output Dense layer"
        )
    return dense[0], dense[1]


def _equalizer(kernel: np.ndarray) -> np.ndarray:
    """Per-column factors that make each column span as much of ``[-128/127, 1]`` as it
    can (see :func:`sparse_weights`); 1 for an empty column."""
    top = kernel.max(axis=0)
    bottom = -kernel.min(axis=0)
    with np.errstate(divide="ignore"):
        scale = np.minimum(1.0 / top, (128 / 127) / bottom)  # inf where one side is empty
    scale[~np.isfinite(scale)] = 1.0  # a unit pruned to nothing: leave it alone
    return scale


def word_table(model: keras.Model) -> tuple[np.ndarray, np.ndarray] | None:
    """The word branch folded into one table (``[window * rows, filters]``) and the
    convolution's bias, or None if the model has no branch. Block ``j`` holds, for every
    lexicon row, what offset ``j`` of the convolution adds for that word: its vector,
    projected, times the kernel's slice ``j``; so a window sums ``window`` rows, then the
    bias, before the ReLU. The padding row is zero, as training's mask makes it, except in
    the centre block, which only an empty sentence gathers there: it holds minus the bias,
    so that such a sentence gets the branch's output of 0 that the mask gives it."""
    named = {layer.name: layer for layer in model.layers}
    if "word_conv" not in named:
        return None
    (vectors,) = (np.asarray(w, np.float64) for w in named["word_vectors"].get_weights())
    projection, projection_bias = (
        np.asarray(w, np.float64) for w in named["word_projection"].get_weights()
    )
    kernel, bias = (np.asarray(w, np.float64) for w in named["word_conv"].get_weights())
    projected = vectors @ projection + projection_bias
    projected[0] = 0.0
    window = kernel.shape[0]
    blocks = [projected @ kernel[j] for j in range(window)]
    blocks[window // 2][0] = -bias
    return np.vstack(blocks), bias


def word_rows(kernel: np.ndarray, featurizer: Featurizer, words: Sequence[str]) -> np.ndarray:
    """One first-layer row per word: the sum of the rows of its word and character
    n-grams, weighted as the featurizer weights them, over :data:`WORD_ROW_WEIGHT`. Fed as
    one occurrence at that weight it adds exactly what its ~20 n-gram occurrences add,
    since the sentence's scale multiplies both alike."""
    rows = np.zeros((len(words), kernel.shape[1]), kernel.dtype)
    for row, word in enumerate(words):
        ids, weights = featurizer.ngrams(word)
        rows[row] = weights.astype(kernel.dtype) @ kernel[ids] / WORD_ROW_WEIGHT
    return rows


def frequent_words(texts: Sequence[str], limit: int = 4096) -> tuple[str, ...]:
    """The ``limit`` words most frequent in ``texts`` (ties alphabetically): the words
    worth a row of their own, since nearly every command consists of them."""
    counts: Counter[str] = Counter()
    for text in texts:
        counts.update(tokenize(text))
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return tuple(word for word, _ in ranked[:limit])


def sparse_weights(
    model: keras.Model, featurizer: Featurizer | None = None
) -> tuple[np.ndarray, ...]:
    """``(kernel, bias, out_kernel, out_bias)``, and the folded :func:`word_table` and its
    bias if the model has a word branch, with every hidden unit (and word filter) rescaled
    so that its kernel column spans as much of ``[-128/127, 1]`` as it can. With a
    ``featurizer`` that has ``config.words``, their rows (:func:`word_rows`) follow the
    buckets' rows.

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
    if featurizer is not None and featurizer.config.words:
        kernel = np.vstack([kernel, word_rows(kernel, featurizer, featurizer.config.words)])
    out_kernel, out_bias = (np.asarray(w, np.float64) for w in output.get_weights())
    scale = _equalizer(kernel)
    folded = word_table(model)
    if folded is not None:
        # The same argument holds for the word branch: ReLU and max commute with a
        # positive factor per filter.
        table, word_bias = folded
        word_scale = _equalizer(table)
        scale = np.concatenate([scale, word_scale])
        table, word_bias = table * word_scale, word_bias * word_scale
    weights = (
        (kernel * scale[: kernel.shape[1]]).astype(np.float32),
        (bias * scale[: kernel.shape[1]]).astype(np.float32),
        (out_kernel / scale[:, None]).astype(np.float32),
        out_bias.astype(np.float32),
    )
    if folded is None:
        return weights
    return (*weights, table.astype(np.float32), word_bias.astype(np.float32))


def sparse_samples(
    representative: Sequence[Occurrences], padding: int
) -> Iterator[list[np.ndarray]]:
    """Calibration inputs: each sentence as the runtime feeds it, all in the block that
    holds the longest (TensorFlow's calibrator sizes the graph once, on the first)."""
    size = block_size(max((min(len(f.ids), MAX_SLOTS) for f in representative), default=0))
    for features in representative:
        n = min(len(features.ids), size)
        ids = np.full((1, size), padding, np.int32)
        weights = np.zeros((1, size), np.float32)
        ids[0, :n] = features.ids[:n]
        weights[0, :n] = features.weights[:n]
        sample = [ids, weights, np.array([[features.scale]], np.float32)]
        if features.windows is not None:
            sample.append(features.windows[None, :])
        yield sample


def activations(
    features: Occurrences,
    padded_kernel: np.ndarray,
    bias: np.ndarray,
    words: tuple[np.ndarray, np.ndarray, int, int] | None = None,
) -> np.ndarray:
    """What the exported graph feeds its output layer for one sentence, in float: the
    hidden units, then (with ``words``: the table, its bias, positions and window, as
    :func:`to_tflite` lays them out) the word filters. Calibration's view of the graph."""
    n = min(len(features.ids), MAX_SLOTS)
    hidden = features.weights[:n] @ padded_kernel[features.ids[:n]] * features.scale + bias
    if words is None or features.windows is None:
        return np.maximum(hidden, 0.0)
    table, word_bias, positions, window = words
    rows = table[features.windows].reshape(positions, window, -1).mean(axis=1)
    return np.maximum(np.concatenate([hidden, rows.max(axis=0) + word_bias]), 0.0)


def logit_range(logits: np.ndarray) -> tuple[float, float]:
    """The int8 range for the output layer's logits (``[sentences, C]`` of calibration
    sentences): up to the highest top logit, and down to the lowest top logit less
    ``ln(256 C)`` if the logits reach that far. Softmax only sees differences, and all the
    logits that far under their sentence's top together weigh less than one int8 step of
    its output (1/256), so clipping them changes nothing the runtime reads. A confident
    model's range is then about half of the converter's (every class's lowest logit),
    whose coarser steps tie close classes (~4 of every 1,000 HWU64 test sentences)."""
    top = logits.max(axis=1)
    low = max(float(top.min() - np.log(256 * logits.shape[1])), float(logits.min()))
    # An int8 range holds 0 (its zero point is one of its 256 values).
    return min(low, 0.0), max(float(top.max()), 0.0)


def to_tflite(
    model: keras.Model,
    representative: Sequence[Occurrences],
    mode: Mode,
    featurizer: Featurizer | None = None,
) -> bytes:
    """Convert ``model`` (dense features -> logits) to a TFLite flatbuffer from a sentence's
    feature occurrences to probabilities.

    ``representative`` holds real sentences' features (training sentences): they calibrate
    the int8 ranges, and come from ``featurizer`` (the runtime's), whose ``config.words``
    get first-layer rows of their own (:func:`word_rows`).
    """
    exported = sparse_weights(model, featurizer)
    kernel, bias, out_kernel, out_bias = exported[:4]
    table, word_bias = (exported[4], exported[5]) if len(exported) > 4 else (None, None)
    dim, hidden = kernel.shape
    if table is not None and featurizer is not None:
        # The graph takes each window's mean, not its sum (see below): the bias added to
        # it is over ``window`` too, and the output layer's rows make up for the factor.
        out_kernel = out_kernel.copy()
        out_kernel[hidden:] *= featurizer.config.window
        word_bias = word_bias / featurizer.config.window
    # Row ``dim`` (the featurizer's ``padding``) is zero, so a padded slot adds nothing
    # (exactly, in int8 too: the equalized kernel has zero point 0), whatever its weight.
    padded_kernel = np.vstack([kernel, np.zeros((1, hidden), np.float32)])

    def hidden_layer(ids: tf.Tensor, weights: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
        rows = tf.gather(tf.constant(padded_kernel), ids[0])  # [K, hidden]
        # rows^T [hidden, K] times weights^T [K, 1]: the converter makes it TRANSPOSE +
        # FULLY_CONNECTED with the weights as its one output channel, the fast shape (see
        # the module docstring); weights [1, K] times rows would be a slow BATCH_MATMUL.
        column = tf.matmul(tf.transpose(rows), weights, transpose_b=True)  # [hidden, 1]
        summed = tf.reshape(column, [1, hidden])
        return tf.nn.relu(summed * scale + bias)

    # The output bias is folded into the kernel as one more row, read by a constant
    # activation: in int8 the logits are then rounded once, by the product, rather than
    # before the bias and again by an ADD of it (the two cost HWU64's student ~4 of every
    # 1,000 test sentences). The constant is the largest activation the calibration
    # sentences reach, so that it does not widen the range the activations share.
    branch = None
    if table is not None and featurizer is not None:
        branch = (table, word_bias, featurizer.config.positions, featurizer.config.window)
    calibration = np.array(
        [activations(f, padded_kernel, bias, branch) for f in representative]
    ).reshape(len(representative), -1)
    peak = float(calibration.max(initial=0.0)) or 1.0
    biased_kernel = np.vstack([out_kernel, out_bias[None, :] / peak]).astype(np.float32)

    def output_layer(*inputs: tf.Tensor) -> tf.Tensor:
        constant = tf.constant([[peak]], tf.float32)
        joined = tf.concat([*inputs, constant], axis=1)
        logits = tf.matmul(joined, tf.constant(biased_kernel))
        return tf.nn.softmax(logits, name="probabilities")

    sparse_inputs = [
        tf.TensorSpec([1, None], tf.int32, name="ids"),
        tf.TensorSpec([1, None], tf.float32, name="weights"),
        tf.TensorSpec([1, 1], tf.float32, name="scale"),
    ]
    if table is None:

        @tf.function(input_signature=sparse_inputs, autograph=False)
        def classify(ids: tf.Tensor, weights: tf.Tensor, scale: tf.Tensor) -> tf.Tensor:
            return output_layer(hidden_layer(ids, weights, scale))

    else:
        if featurizer is None or not featurizer.config.lexicon:
            raise ValueError("a model with a word branch needs the featurizer of its lexicon")
        cfg = featurizer.config
        filters = table.shape[1]

        @tf.function(
            input_signature=[
                *sparse_inputs,
                tf.TensorSpec([1, cfg.positions * cfg.window], tf.int32, name="windows"),
            ],
            autograph=False,
        )
        def classify(
            ids: tf.Tensor, weights: tf.Tensor, scale: tf.Tensor, windows: tf.Tensor
        ) -> tf.Tensor:
            rows = tf.gather(tf.constant(table), windows[0])  # [positions * window, F]
            grid = tf.reshape(rows, [1, cfg.positions, cfg.window, filters])
            # Pooling kernels, not SUM and REDUCE_MAX: tflite_runtime's int8 reductions
            # took ~40 µs here, the pools ~5. The mean of a window is its sum over
            # ``window`` (scaled back above), and the ReLU commutes with the max, as does
            # adding the bias, which is therefore added to the max, once per filter. The
            # bias is an ADD of its own rather than folded into the table: int8
            # CONCATENATION makes its inputs share its scale, and the ops from the table
            # to it would otherwise pass that scale (of ReLU outputs, no negative values)
            # back to the table.
            if cfg.window > 1:
                grid = tf.nn.avg_pool2d(grid, (1, cfg.window), (1, cfg.window), "VALID")
            pooled = tf.nn.max_pool2d(grid, (cfg.positions, 1), (cfg.positions, 1), "VALID")
            biased = tf.reshape(pooled, [1, filters]) + tf.constant(word_bias)
            words = tf.nn.relu(biased)
            return output_layer(hidden_layer(ids, weights, scale), words)

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [classify.get_concrete_function()], classify
    )
    if mode != "float32":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if mode == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif mode == "int8":
        converter.representative_dataset = lambda: sparse_samples(representative, dim)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # The weights and the scale stay float inputs, quantized by the graph's first ops.
        converter.inference_input_type = tf.float32
        converter.inference_output_type = tf.int8
        # One scale for the output kernel, as the rewrite needs it (convert.rewrite), set
        # once here: requantizing per-channel int8 values rounds them twice.
        converter._experimental_disable_per_channel = True
    with silenced():
        content = converter.convert()
    if mode != "int8":
        return content
    logits = calibration @ out_kernel + out_bias
    return swap_output_layer(content, logit_range(logits) if len(logits) else None)
