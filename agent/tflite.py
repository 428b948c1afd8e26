"""Open a .tflite file with whichever TFLite runtime is installed.

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


class SparseRunner:
    """Feeds an intent model with sparse feature vectors and reads its raw output.

    A sentence touches ~100 of thousands of input buckets, so only those are quantized
    and written; the rest of the input tensor stays at zero (the zero point) between
    calls. The runtime classifier and the build's evaluation both run models this way,
    so the numbers in a model's report are the numbers the Pi computes.
    """

    def __init__(self, interpreter: Any) -> None:
        self.interpreter = interpreter
        inp = interpreter.get_input_details()[0]
        out = interpreter.get_output_details()[0]
        self.dim = int(inp["shape"][-1])
        self.classes = int(out["shape"][-1])
        self._input_index = inp["index"]
        self._output_index = out["index"]
        in_scale, in_zero = inp["quantization"]
        self._in_scale = 1.0 / in_scale if in_scale else 0.0
        self._in_zero = float(in_zero)
        self._out_scale, self._out_zero = out["quantization"]
        self._input = np.full((1, self.dim), self._in_zero, inp["dtype"])

    def raw(self, index: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """The output tensor as the model wrote it (int8 or float); valid until the next call."""
        row = self._input[0]
        if self._in_scale:
            # int8 input: q = round(x / scale) + zero_point, for the touched buckets only.
            quantized = np.rint(weights * self._in_scale) + self._in_zero
            row[index] = np.clip(quantized, -128, 127)
        else:
            row[index] = weights
        self.interpreter.set_tensor(self._input_index, self._input)
        self.interpreter.invoke()
        row[index] = self._in_zero  # back to the all-zero vector for the next call
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
