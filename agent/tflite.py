"""Open a .tflite file with whichever TFLite runtime is installed, and feed it sentences.

The Pi uses ``tflite_runtime`` (no TensorFlow there); ``ai_edge_litert`` is its renamed
successor, and ``tensorflow.lite`` is the last resort on a workstation.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import numpy as np

from agent.featurize import Occurrences

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


def open_interpreter(
    path: str | Path, preference: str = "auto", threads: int = 1, content: bytes | None = None
) -> tuple[Any, str]:
    """A ready (tensors allocated) interpreter for ``path`` and the runtime's name.

    The model is handed over as bytes (``content``, or ``path`` read now), never as a path:
    the runtime would memory-map the file, and a copy over it (a model update) would then
    kill the running agent with SIGBUS at its next command.
    """
    runtime = available_runtime(preference)
    module = _import(runtime)
    data = Path(path).read_bytes() if content is None else content
    interpreter = module.Interpreter(model_content=data, num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter, runtime


INPUTS = ("words", "chars", "scale")
"""The intent model's inputs (format 3): int32 ``[1, Kw]`` and ``[1, Kc]`` buckets, float32
``[1, 1]``; see :class:`agent.featurize.Occurrences`."""


def _input_name(detail: dict[str, Any]) -> str:
    """An input's name as given at export (converters may add a signature prefix)."""
    name = str(detail["name"]).split(":")[0]
    return name.removeprefix("serving_default_")


class SparseRunner:
    """Feeds an intent model a sentence's feature occurrences and reads its raw output.

    The model (format 3, see ``convert/quantize.py``) takes the buckets of the sentence's
    word n-grams and character n-grams, each padded to a fixed length with the bucket
    ``dim`` (a kernel row of zeros), and the scale that normalizes their sum. It gathers
    one first-layer row per occurrence and sums them with constant weights, so the work
    per sentence follows the ~100 features it has, not the thousands of buckets it could
    touch, and no per-sentence weights need quantizing. A sentence with more occurrences
    than the model takes keeps the first ones (the file's sizes hold 99% of the training
    sentences). The runtime classifier and the build's evaluation both run models this
    way, so the numbers in a model's report are the numbers the Pi computes.
    """

    def __init__(self, interpreter: Any) -> None:
        self.interpreter = interpreter
        inputs = {_input_name(d): d for d in interpreter.get_input_details()}
        if sorted(inputs) != sorted(INPUTS) or any(
            inputs[name]["dtype"] != np.int32 for name in INPUTS[:2]
        ):
            raise ValueError(
                "not an intent model of this version (expected int32 words and chars and"
                " a float32 scale); rebuild it with 'voice-agent convert'"
            )
        out = interpreter.get_output_details()[0]
        self.dim = self._buckets(interpreter) - 1
        """The featurizer dim the model was built for; bucket ``dim`` is the padding."""
        self.classes = int(out["shape"][-1])
        words, chars, scale = (inputs[name] for name in INPUTS)
        self.word_slots = int(words["shape"][-1])
        self.char_slots = int(chars["shape"][-1])
        self._indices = (words["index"], chars["index"], scale["index"])
        self._output_index = out["index"]
        self._out_scale, self._out_zero = out["quantization"]
        # Preallocated inputs, all padding; only the slots a sentence used need resetting.
        self._words = np.full((1, self.word_slots), self.dim, np.int32)
        self._chars = np.full((1, self.char_slots), self.dim, np.int32)
        self._scale = np.zeros((1, 1), np.float32)
        self._used = [0, 0]

    @staticmethod
    def _buckets(interpreter: Any) -> int:
        """Rows of the gathered kernel: the featurizer dim plus the padding row. (The op
        list is the only place the file states it; every runtime has it.)"""
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        for op in interpreter._get_ops_details():
            if op["op_name"] == "GATHER":
                return int(tensors[op["inputs"][0]]["shape"][0])
        raise ValueError("not an intent model of this version (no GATHER op)")

    def _fill(self, slot: int, row: np.ndarray, ids: np.ndarray) -> None:
        n = min(len(ids), row.shape[0])
        row[:n] = ids[:n]
        if self._used[slot] > n:
            row[n : self._used[slot]] = self.dim  # what the previous, longer sentence left
        self._used[slot] = n

    def raw(self, features: Occurrences) -> np.ndarray:
        """The output tensor as the model wrote it (int8 or float); valid until the next call."""
        self._fill(0, self._words[0], features.words)
        self._fill(1, self._chars[0], features.chars)
        self._scale[0, 0] = features.scale
        words, chars, scale = self._indices
        interpreter = self.interpreter
        interpreter.set_tensor(words, self._words)
        interpreter.set_tensor(chars, self._chars)
        interpreter.set_tensor(scale, self._scale)
        interpreter.invoke()
        return interpreter.get_tensor(self._output_index)[0]

    def probability(self, value: float) -> float:
        """One raw output value as a probability."""
        if self._out_scale:
            return (value - self._out_zero) * self._out_scale
        return value

    def probabilities(self, features: Occurrences) -> np.ndarray:
        """Every label's probability, as a new float32 array."""
        raw = self.raw(features).astype(np.float32)
        if self._out_scale:
            raw -= self._out_zero
            raw *= self._out_scale
        return raw
