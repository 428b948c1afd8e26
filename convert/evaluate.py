"""Measure a model stage the way the Pi will use it: accuracy, per-intent F1, latency, bytes.

Every stage (teacher, float student, pruned, int8) is scored on the same held-out split,
so the report shows what each technique costs and saves.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from agent.featurize import Featurizer, tokenize
from agent.tflite import SparseRunner
from convert.quiet import silenced


@dataclass(frozen=True)
class StageResult:
    """One row of the report's table."""

    stage: str
    accuracy: float
    """Arg-max accuracy over the held-out split, out-of-scope class included."""
    bytes: int
    p50_us: float
    p99_us: float
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class TFLiteModel:
    """A TFLite flatbuffer run with TensorFlow's interpreter the way the Pi runs it
    (:class:`agent.tflite.SparseRunner`), one sentence at a time."""

    def __init__(self, content: bytes, featurizer: Featurizer) -> None:
        self.content = content
        self.featurizer = featurizer

        def new_interpreter() -> tf.lite.Interpreter:
            # Not allocated here: SparseRunner sizes each block's inputs, then allocates.
            with silenced():
                return tf.lite.Interpreter(model_content=content, num_threads=1)

        with silenced():  # the first allocation prints "Created TensorFlow Lite XNNPACK ..."
            self.runner = SparseRunner(new_interpreter)

    def probabilities(self, texts: list[str]) -> np.ndarray:
        return np.stack(
            [self.runner.probabilities(self.featurizer.occurrences(tokenize(t))) for t in texts]
        )

    def classify_one(self, text: str) -> int:
        return int(np.argmax(self.runner.raw(self.featurizer.occurrences(tokenize(text)))))


def latency_us(
    run: Callable[[str], object], texts: list[str], rounds: int = 3
) -> tuple[float, float]:
    """p50 and p99 wall time of ``run(text)`` in microseconds (after one warm-up pass)."""
    for text in texts[:50]:
        run(text)
    samples = []
    for _ in range(rounds):
        for text in texts:
            start = time.perf_counter()
            run(text)
            samples.append(time.perf_counter() - start)
    p50, p99 = np.percentile(np.array(samples) * 1e6, [50, 99])
    return float(p50), float(p99)


def per_class_f1(
    labels: list[str], truth: np.ndarray, pred: np.ndarray
) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of every label."""
    scores = {}
    for i, label in enumerate(labels):
        tp = int(np.sum((pred == i) & (truth == i)))
        fp = int(np.sum((pred == i) & (truth != i)))
        fn = int(np.sum((pred != i) & (truth == i)))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        scores[label] = {
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": int(np.sum(truth == i)),
        }
    return scores


def confusion(n: int, truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    matrix = np.zeros((n, n), np.int64)
    np.add.at(matrix, (truth, pred), 1)
    return matrix


@dataclass(frozen=True)
class Rejection:
    """The calibrated out-of-scope decision and how it scores on the held-out split."""

    threshold: float
    in_scope_accuracy: float
    """Held-out in-scope sentences accepted with the right intent."""
    in_scope_rejected: float
    """Held-out in-scope sentences wrongly rejected."""
    out_of_scope_rejected: float
    """Held-out out-of-scope sentences rejected (None when the spec has no ``none:``)."""


def decide(probs: np.ndarray, none: int, threshold: float) -> np.ndarray:
    """Arg-max label, or ``none`` (-1 when there is no such class) under ``threshold``."""
    pred = probs.argmax(1)
    return np.where(probs.max(1) < threshold, none, pred)


def calibrate(probs: np.ndarray, truth: np.ndarray, none: int, floor: float = 0.3) -> Rejection:
    """Pick the confidence threshold that best separates in-scope from out-of-scope.

    Maximizes the mean of in-scope accuracy and out-of-scope rejection on held-out data;
    with no out-of-scope examples, keeps 99% of correct in-scope answers. Never below
    ``floor``, so a near-uniform output is never accepted.
    """
    inside = truth != none
    outside = ~inside
    best: tuple[float, float] = (-1.0, floor)
    if outside.any():
        for threshold in np.arange(floor, 0.96, 0.01):
            pred = decide(probs, none, float(threshold))
            score = np.mean(pred[inside] == truth[inside]) + np.mean(pred[outside] == none)
            if score > best[0] + 1e-9:
                best = (float(score), float(round(threshold, 2)))
        threshold = best[1]
    else:
        conf = probs.max(1)[inside & (probs.argmax(1) == truth)]
        threshold = float(max(floor, np.percentile(conf, 1) if conf.size else floor))
        threshold = round(min(threshold, 0.9), 2)
    pred = decide(probs, none, threshold)
    return Rejection(
        threshold=threshold,
        in_scope_accuracy=float(np.mean(pred[inside] == truth[inside])),
        in_scope_rejected=float(np.mean(pred[inside] == none))
        if none >= 0
        else float(np.mean(probs.max(1)[inside] < threshold)),
        out_of_scope_rejected=float(np.mean(pred[outside] == none))
        if outside.any()
        else float("nan"),
    )
