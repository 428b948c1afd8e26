"""Training loop shared by plain training, knowledge distillation and pruning.

The loss is ``alpha * CE(labels) + (1 - alpha) * T² * KL(teacher_T || student_T)``
(Hinton et al., 2015): the teacher's softened probabilities carry how classes resemble
each other, which a small student cannot learn from hard labels alone.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from convert.prune import MagnitudePruner


@dataclass(frozen=True)
class FitConfig:
    """Optimizer and distillation settings of one training run."""

    epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 2e-3
    alpha: float = 1.0
    """Weight of the hard-label loss; 1.0 means no distillation."""
    temperature: float = 2.0
    schedule: str = "constant"
    """Learning rate over the run: ``constant``, or ``cosine`` (decays to zero by the last
    step, so the weights settle instead of ending on one noisy batch's update)."""
    average: int = 0
    """Train with the mean of the weights at the end of the last ``average`` epochs (0 or 1:
    the last epoch's): at a constant rate the weights wander around a minimum, and their
    mean sits nearer its centre than any one of them (Izmailov et al., 2018)."""

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(
                f"unknown schedule '{self.schedule}' (expected {', '.join(SCHEDULES)})"
            )
        if not 0 <= self.average <= self.epochs:
            raise ValueError(f"average: expected 0 to {self.epochs} epochs, got {self.average}")


SCHEDULES = ("constant", "cosine")


EpochCallback = Callable[[int, float], None]


def _batches(
    features: Any,
    labels: np.ndarray,
    teacher_logits: np.ndarray,
    batch_size: int,
    seed: int,
) -> Callable[[], Any]:
    """A fresh shuffled pass over the rows, each epoch; a scipy sparse matrix is made dense
    one batch at a time (a transfer set of 10^5 sentences x 10^4 buckets would take GBs).
    ``features`` may be a pair ``(n-gram features, word ids)`` for a model with a word
    branch (``convert/model.py``); the batch is then that pair."""
    labels = labels.astype(np.int32)
    teacher_logits = teacher_logits.astype(np.float32)
    if isinstance(features, np.ndarray):
        data = (
            tf.data.Dataset.from_tensor_slices((features, labels, teacher_logits))
            .shuffle(len(labels), seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size)
            .prefetch(2)
        )
        return lambda: data
    if isinstance(features, tuple):
        ngrams, word_ids = features
        dense_ngrams = _dense_rows(ngrams)

        def take(rows: np.ndarray) -> Any:
            return dense_ngrams(rows), word_ids[rows]

    else:
        take = _dense_rows(features)
    rng = np.random.default_rng(seed)

    def epoch() -> Any:
        order = rng.permutation(len(labels))
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            yield take(rows), labels[rows], teacher_logits[rows]

    return epoch


def _dense_rows(matrix: Any) -> Callable[[np.ndarray], np.ndarray]:
    """Rows of a dense array or a scipy sparse matrix, as a dense array."""
    if isinstance(matrix, np.ndarray):
        return lambda rows: matrix[rows]
    csr = matrix.tocsr()
    return lambda rows: csr[rows].toarray()


def fit(
    model: keras.Model,
    features: Any,
    labels: np.ndarray,
    config: FitConfig,
    *,
    seed: int,
    teacher_logits: np.ndarray | None = None,
    pruner: MagnitudePruner | None = None,
    on_epoch: EpochCallback | None = None,
) -> None:
    """Train ``model`` in place; ``labels`` are class indices, -1 for unlabeled rows.

    ``features`` is a dense array or a scipy sparse matrix, or a pair of one and the
    word ids of a model with a word branch. Unlabeled rows (only useful with
    a teacher) contribute the distillation term alone.
    """
    n_classes = model.output_shape[-1]
    if teacher_logits is None:
        teacher_logits = np.zeros((len(labels), n_classes), np.float32)
        alpha = 1.0
    else:
        alpha = config.alpha
    temperature = config.temperature
    rate: Any = config.learning_rate
    if config.schedule == "cosine":
        steps = config.epochs * -(-len(labels) // config.batch_size)
        rate = keras.optimizers.schedules.CosineDecay(config.learning_rate, max(steps, 1))
    optimizer = keras.optimizers.Adam(rate)
    data = _batches(features, labels, teacher_logits, config.batch_size, seed)

    @tf.function(reduce_retracing=True)
    def step(x: tf.Tensor, y: tf.Tensor, t: tf.Tensor) -> tf.Tensor:
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            labeled = tf.cast(y >= 0, tf.float32)
            hard = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.maximum(y, 0), logits)
            hard = tf.reduce_sum(hard * labeled) / tf.maximum(tf.reduce_sum(labeled), 1.0)
            loss = alpha * hard
            if alpha < 1.0:
                soft_t = tf.nn.softmax(t / temperature)
                log_s = tf.nn.log_softmax(logits / temperature)
                kl = tf.reduce_sum(soft_t * (tf.math.log(soft_t + 1e-9) - log_s), axis=-1)
                loss += (1.0 - alpha) * temperature**2 * tf.reduce_mean(kl)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
        return loss

    keras.utils.set_random_seed(seed)
    # Threads may otherwise add up a batch's gradients in any order: at the bench's size
    # two runs of one seed and one start differ by up to a logit (bench/README, session 16).
    # TensorFlow offers it only for the whole process, and all training here wants it.
    tf.config.experimental.enable_op_determinism()
    averaged: list[np.ndarray] = []
    for epoch in range(config.epochs):
        total, batches = 0.0, 0
        for x, y, t in data():
            total += float(step(x, y, t))
            batches += 1
            if pruner is not None:
                pruner.after_step()
        if on_epoch is not None:
            on_epoch(epoch, total / max(batches, 1))
        if config.average > 1 and epoch >= config.epochs - config.average:
            weights = model.get_weights()
            averaged = (
                [a + w for a, w in zip(averaged, weights, strict=True)] if averaged else weights
            )
    if averaged:
        model.set_weights([a / config.average for a in averaged])
    if pruner is not None:
        pruner.finish()
