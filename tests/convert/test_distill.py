"""convert.distill.fit: dense and scipy sparse features, with and without a teacher."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy.sparse import csr_matrix

# Not in TensorFlow's public API, which has only the switch.
from tensorflow.python.framework.config import is_op_determinism_enabled

from convert.distill import FitConfig, fit
from convert.model import MlpConfig, build_mlp


def _toy(n: int = 240, dim: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Three classes, each marked by its own block of active buckets (plus noise)."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, n)
    features = (rng.random((n, dim)) < 0.03).astype(np.float32) * 0.2
    for row, label in enumerate(labels):
        features[row, label * 8 : label * 8 + 4] = 1.0
    return features, labels.astype(np.int64)


def _accuracy(model: object, features: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(model(features)).argmax(1) == labels))  # type: ignore[operator]


def test_sparse_features_train_like_dense() -> None:
    features, labels = _toy()
    config = FitConfig(epochs=15, batch_size=32, learning_rate=5e-3)
    for matrix in (features, csr_matrix(features)):
        model = build_mlp(features.shape[1], 3, MlpConfig(hidden=16))
        fit(model, matrix, labels, config, seed=0)
        assert _accuracy(model, features, labels) > 0.95


def test_unlabelled_rows_learn_from_the_teacher_alone() -> None:
    features, labels = _toy()
    teacher = np.eye(3, dtype=np.float32)[labels] * 8.0  # a confident, correct teacher
    hidden = -np.ones_like(labels)  # no hard labels at all
    model = build_mlp(features.shape[1], 3, MlpConfig(hidden=16))
    config = FitConfig(epochs=15, batch_size=32, learning_rate=5e-3, alpha=0.3, temperature=3)
    fit(model, csr_matrix(features), hidden, config, seed=0, teacher_logits=teacher)
    assert _accuracy(model, features, labels) > 0.95


def _last_epoch_move(schedule: str) -> float:
    """How far the last epoch moved the weights, relative to the epoch before it."""
    features, labels = _toy()
    model = build_mlp(features.shape[1], 3, MlpConfig(hidden=16))
    snapshots: list[np.ndarray] = []

    def snapshot(epoch: int, loss: float) -> None:
        snapshots.append(np.concatenate([w.ravel() for w in model.get_weights()]))

    config = FitConfig(epochs=4, batch_size=32, learning_rate=5e-3, schedule=schedule)
    fit(model, features, labels, config, seed=0, on_epoch=snapshot)
    assert _accuracy(model, features, labels) > 0.95
    before, last = (np.abs(b - a).sum() for a, b in itertools.pairwise(snapshots[-3:]))
    return float(last / before)


def test_cosine_schedule_settles_the_weights_by_the_last_epoch() -> None:
    # With a constant rate the last epoch moves the weights about as much as the one
    # before; a cosine decay reaches zero at the last step, so the last epoch barely does.
    assert _last_epoch_move("cosine") < 0.3 < _last_epoch_move("constant")


def test_unknown_schedule_is_refused() -> None:
    with pytest.raises(
        ValueError, match=r"^unknown schedule 'step' \(expected constant, cosine\)$"
    ):
        FitConfig(schedule="step")


def test_average_keeps_the_mean_of_the_last_epochs_weights() -> None:
    features, labels = _toy()
    model = build_mlp(features.shape[1], 3, MlpConfig(hidden=16))
    snapshots: list[list[np.ndarray]] = []

    def snapshot(epoch: int, loss: float) -> None:
        snapshots.append(model.get_weights())

    config = FitConfig(epochs=6, batch_size=32, learning_rate=5e-3, average=3)
    fit(model, features, labels, config, seed=0, on_epoch=snapshot)
    assert len(snapshots) == 6
    for got, *last in zip(model.get_weights(), *snapshots[-3:], strict=True):
        np.testing.assert_allclose(got, np.mean(last, axis=0), rtol=1e-5, atol=1e-6)
        assert not np.allclose(got, last[-1])  # not simply the last epoch's
    assert _accuracy(model, features, labels) > 0.95


def test_average_over_more_epochs_than_trained_is_refused() -> None:
    with pytest.raises(ValueError, match="average: expected 0 to 4 epochs, got 5"):
        FitConfig(epochs=4, average=5)


def test_training_runs_with_deterministic_ops() -> None:
    """Two runs of one seed agree at the bench's size only with TensorFlow's deterministic
    ops (at a test's size they agree without, so the switch itself is what is checked)."""
    features, labels = _toy()
    fit(
        build_mlp(features.shape[1], 3, MlpConfig(hidden=16)),
        features,
        labels,
        FitConfig(epochs=1),
        seed=0,
    )
    assert is_op_determinism_enabled()
