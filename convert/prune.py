"""Magnitude pruning: the smallest weights of each dense kernel are set to zero and kept there.

Sparsity rises along the cubic schedule of Zhu & Gupta (2017), so the network has time to
recover between pruning steps. Zeros compress well and, with TFLite's sparse encoding,
need not be stored at all.
"""

from __future__ import annotations

import keras
import numpy as np


class MagnitudePruner:
    """Prunes every Dense kernel of ``model`` to ``target`` sparsity over ``steps`` updates."""

    def __init__(self, model: keras.Model, target: float, steps: int, every: int = 20) -> None:
        if not 0.0 <= target < 1.0:
            raise ValueError(f"pruning sparsity must be in [0, 1), not {target}")
        self.target = target
        self.steps = max(steps, 1)
        self.every = every
        self.kernels = [
            layer.kernel for layer in model.layers if isinstance(layer, keras.layers.Dense)
        ]
        self.masks = [np.ones(k.shape, np.float32) for k in self.kernels]
        self.step = 0

    def sparsity_at(self, step: int) -> float:
        done = min(step / (self.steps * 0.8), 1.0)
        return self.target * (1.0 - (1.0 - done) ** 3)

    def _update_masks(self, sparsity: float) -> None:
        for i, kernel in enumerate(self.kernels):
            weights = np.abs(kernel.numpy())
            k = int(sparsity * weights.size)
            if k == 0:
                continue
            cutoff = np.partition(weights, k - 1, axis=None)[k - 1]
            self.masks[i] = (weights > cutoff).astype(np.float32)

    def _apply(self) -> None:
        for kernel, mask in zip(self.kernels, self.masks, strict=True):
            kernel.assign(kernel.numpy() * mask)

    def after_step(self) -> None:
        """Called after every optimizer step: re-prune on schedule, keep pruned weights at 0."""
        self.step += 1
        if self.step % self.every == 0 or self.step == self.steps:
            self._update_masks(self.sparsity_at(self.step))
        self._apply()

    def finish(self) -> None:
        self._update_masks(self.target)
        self._apply()


def sparsity(model: keras.Model) -> float:
    """Fraction of exact zeros over all Dense kernels."""
    zeros = total = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Dense):
            weights = layer.kernel.numpy()
            zeros += int(np.count_nonzero(weights == 0))
            total += weights.size
    return zeros / total if total else 0.0
