"""Open a .tflite file with whichever TFLite runtime is installed, and feed it sentences.

The Pi uses ``tflite_runtime`` (no TensorFlow there); ``ai_edge_litert`` is its renamed
successor, and ``tensorflow.lite`` is the last resort on a workstation.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

RUNTIMES = ("tflite_runtime", "ai_edge_litert", "tensorflow")
_MODULES = {
    "tflite_runtime": "tflite_runtime.interpreter",
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tensorflow": "tensorflow.lite",
}


class RuntimeUnavailable(Exception):
    """No usable TFLite runtime; ``str()`` says which were tried and how to install one."""


def _import(runtime: str) -> Any:
    return importlib.import_module(_MODULES[runtime])


def available_runtime(preference: str = "auto") -> str:
    """The runtime that :func:`open_interpreter` would use for ``preference``."""
    order = RUNTIMES if preference == "auto" else (preference,)
    if preference != "auto" and preference not in RUNTIMES:
        raise RuntimeUnavailable(
            f"unknown TFLite runtime '{preference}' (expected auto, {', '.join(RUNTIMES)})"
        )
    errors = []
    for name in order:
        try:
            _import(name)
        except Exception as err:
            errors.append(
                f"{name}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            )
            continue
        return name
    raise RuntimeUnavailable(
        "no TFLite runtime could be imported ("
        + "; ".join(errors)
        + "); install one: pip install 'voice-agent[runtime]'"
    )


def open_interpreter(path: Path, preference: str = "auto", threads: int = 1) -> tuple[Any, str]:
    """A ready (tensors allocated) interpreter for ``path`` and the runtime's name."""
    runtime = available_runtime(preference)
    module = _import(runtime)
    interpreter = module.Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter, runtime


def strongest(index: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest ``weights`` and their ``index`` (all of them when there are fewer)."""
    if len(index) <= k:
        return index, weights
    keep = np.argpartition(weights, len(weights) - k)[-k:]
    return index[keep], weights[keep]


def sparse_input(index: np.ndarray, weights: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """A sentence's buckets as the model's ``ids`` (int32) and float ``weights``, both of
    length ``k``: padded with bucket 0 at weight 0, which adds nothing to the gathered sum.

    A sentence touching more than ``k`` buckets keeps the ``k`` largest weights (word
    n-grams before character n-grams): the nearest ``k``-sparse vector to the real one,
    so a long sentence is classified from its strongest features rather than refused.
    ``index`` must not repeat a bucket (``Featurizer.sparse_words`` never does).
    """
    index, weights = strongest(index, weights, k)
    ids = np.zeros(k, np.int32)
    values = np.zeros(k, np.float32)
    ids[: len(index)] = index
    values[: len(index)] = weights
    return ids, values


class SparseRunner:
    """Feeds an intent model a sentence's touched buckets and reads its raw output.

    The model (format 2, see ``convert/quantize.py``) takes ``ids`` (int32 ``[1, K]``) and
    ``weights`` (float32 ``[1, K]``; an int8 model quantizes them in its first op) and
    gathers one first-layer row per id, so the work per sentence follows the ~100
    buckets it touches, not the thousands it could.
    The runtime classifier and the build's evaluation both run models this way, so the
    numbers in a model's report are the numbers the Pi computes.
    """

    def __init__(self, interpreter: Any) -> None:
        self.interpreter = interpreter
        inputs = interpreter.get_input_details()
        ids = [d for d in inputs if d["dtype"] == np.int32]
        values = [d for d in inputs if d["dtype"] == np.float32]
        if (
            len(inputs) != 2
            or len(ids) != 1
            or len(values) != 1
            or ids[0]["shape"].tolist() != values[0]["shape"].tolist()
        ):
            raise ValueError(
                "not a sparse-input intent model (expected int32 ids and float32 weights,"
                " both [1, K]); rebuild it with 'voice-agent convert'"
            )
        out = interpreter.get_output_details()[0]
        self.k = int(ids[0]["shape"][-1])
        """Buckets fed per sentence; a longer sentence keeps its K largest weights."""
        self.dim = self._buckets(interpreter)
        self.classes = int(out["shape"][-1])
        self._ids_index = ids[0]["index"]
        self._weights_index = values[0]["index"]
        self._output_index = out["index"]
        self._out_scale, self._out_zero = out["quantization"]
        # Preallocated inputs: padding is bucket 0 at weight 0, so only the slots the
        # previous sentence used need resetting.
        self._ids = np.zeros((1, self.k), np.int32)
        self._weights = np.zeros((1, self.k), np.float32)
        self._used = 0

    @staticmethod
    def _buckets(interpreter: Any) -> int:
        """The featurizer dim the model was built for: the rows of the gathered kernel.
        (The op list is the only place the file states it; every runtime has it.)"""
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        for op in interpreter._get_ops_details():
            if op["op_name"] == "GATHER":
                return int(tensors[op["inputs"][0]]["shape"][0])
        raise ValueError("not a sparse-input intent model (no GATHER op)")

    def raw(self, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The output tensor as the model wrote it (int8 or float); valid until the next call.

        ``index``: unique bucket numbers, ``weights``: their values (``sparse_words``).
        """
        if len(index) > self.k:
            index, weights = strongest(index, weights, self.k)
        n = len(index)
        self._ids[0, :n] = index
        row = self._weights[0]
        row[:n] = weights
        if self._used > n:
            # Zero the weights the previous, longer sentence left behind; its stale ids are
            # still valid buckets, and a zero weight makes their rows add nothing.
            row[n : self._used] = 0.0
        self._used = n
        self.interpreter.set_tensor(self._ids_index, self._ids)
        self.interpreter.set_tensor(self._weights_index, self._weights)
        self.interpreter.invoke()
        return self.interpreter.get_tensor(self._output_index)[0]

    def probability(self, value: float) -> float:
        """One raw output value as a probability."""
        if self._out_scale:
            return (value - self._out_zero) * self._out_scale
        return value

    def probabilities(self, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Every label's probability, as a new float32 array."""
        raw = self.raw(index, weights).astype(np.float32)
        if self._out_scale:
            raw -= self._out_zero
            raw *= self._out_scale
        return raw
