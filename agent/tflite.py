"""Open a .tflite file with whichever TFLite runtime is installed, and feed it sentences.

The Pi uses ``tflite_runtime`` (no TensorFlow there); ``ai_edge_litert`` is its renamed
successor, and ``tensorflow.lite`` is the last resort on a workstation.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
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


INPUTS = ("ids", "weights", "scale")
"""The intent model's inputs (format 4): int32 ``[1, K]`` buckets and their float32
``[1, K]`` weights, ``K`` any length, and the float32 ``[1, 1]`` scale; see
:class:`agent.featurize.Occurrences`."""
WORD_INPUT = "windows"
"""The input of a model with a word-vector branch: int32 ``[1, positions * window]``
table rows (:meth:`agent.featurize.Featurizer.windows`), fixed in size."""

SLOT_STEP = 32
"""Occurrences are fed in blocks of this many: each block size has an interpreter of its
own, so a sentence pays for at most this many padding slots."""
MAX_SLOTS = 512
"""The most occurrences fed per sentence; a longer one keeps its first. Spoken commands
have 20-150, the public data sets' test sentences up to ~350."""


def block_size(n: int) -> int:
    """Slots of the block that runs a sentence of ``n`` occurrences: the smallest multiple
    of :data:`SLOT_STEP` that holds them (one block for an empty sentence)."""
    return -(-max(n, 1) // SLOT_STEP) * SLOT_STEP


def _input_name(detail: dict[str, Any]) -> str:
    """An input's name as given at export (converters may add a signature prefix)."""
    name = str(detail["name"]).split(":")[0]
    return name.removeprefix("serving_default_")


class _Block:
    """One interpreter sized for up to ``size`` occurrences, and its input buffers."""

    __slots__ = ("ids", "interpreter", "used", "weights")

    def __init__(self, interpreter: Any, size: int, pad: int) -> None:
        self.interpreter = interpreter
        self.ids = np.full((1, size), pad, np.int32)
        self.weights = np.zeros((1, size), np.float32)
        self.used = 0
        """Slots the last sentence filled; only those need resetting to padding."""


class SparseRunner:
    """Feeds an intent model a sentence's feature occurrences and reads its raw output.

    The model (format 4, see ``convert/quantize.py``) takes the buckets of the sentence's
    n-gram occurrences (or a known word's own row, which sums its n-grams), their weights
    and the scale that normalizes their sum. It gathers one first-layer row per occurrence
    and sums them weighted, so the work per sentence follows the ~5-150 occurrences it
    has, not the thousands of buckets it could touch. Its inputs have no fixed length, but
    resizing an interpreter costs more than a sentence: so there is one interpreter per
    block of :data:`SLOT_STEP` slots (sharing the model's bytes), sized once, and a
    sentence runs on the smallest that holds it, padded with the zero row ``padding`` at
    weight 0. A block's interpreter is made the first time a sentence needs it (~0.4 ms,
    once): commands use one to three of the sixteen, and each interpreter with
    ``threads`` > 1 has a thread pool of its own. A model with a word-vector branch also
    takes the sentence's word windows (:data:`WORD_INPUT`, one fixed size for every block).
    The runtime classifier and the build's evaluation both run models this way, so the
    numbers in a model's report are the numbers the Pi computes.
    """

    def __init__(self, new_interpreter: Callable[[], Any], max_slots: int = MAX_SLOTS) -> None:
        """``new_interpreter`` returns a fresh interpreter of the model each call."""
        first = new_interpreter()
        inputs = {_input_name(d): d for d in first.get_input_details()}
        names = sorted(set(inputs) - {WORD_INPUT})
        if names != sorted(INPUTS) or inputs["ids"]["dtype"] != np.int32:
            raise ValueError(
                "not an intent model of this version (expected int32 ids, weights and a"
                " scale); rebuild it with 'voice-agent convert'"
            )
        out = first.get_output_details()[0]
        self.padding = self._buckets(first) - 1
        """The zero row that pads a block: the featurizer's ``padding`` (its ``dim`` plus
        its word rows), which the model was built for."""
        self.classes = int(out["shape"][-1])
        self.max_slots = max_slots
        self._indices = tuple(inputs[name]["index"] for name in INPUTS)
        words = inputs.get(WORD_INPUT)
        self._windows_index: int | None = None if words is None else words["index"]
        self.windows = 0 if words is None else int(words["shape"][-1])
        """Length of the word branch's input; 0 for a model without one."""
        self._output_index = out["index"]
        self._out_scale, self._out_zero = out["quantization"]
        self._scale = np.zeros((1, 1), np.float32)
        self._new_interpreter = new_interpreter
        self._blocks: list[_Block | None] = [None] * -(-max_slots // SLOT_STEP)
        self._open(SLOT_STEP, first)

    def _open(self, size: int, interpreter: Any = None) -> _Block:
        """The block of ``size`` slots, with a fresh interpreter unless one is given."""
        interpreter = interpreter or self._new_interpreter()
        for input_index in self._indices[:2]:
            interpreter.resize_tensor_input(input_index, [1, size])
        interpreter.allocate_tensors()
        block = self._blocks[size // SLOT_STEP - 1] = _Block(interpreter, size, self.padding)
        return block

    @property
    def blocks(self) -> tuple[int, ...]:
        """The sizes of the blocks whose interpreters exist so far."""
        return tuple(b.ids.shape[1] for b in self._blocks if b is not None)

    @property
    def interpreter(self) -> Any:
        """The interpreter of the smallest block (for inspecting the model's tensors)."""
        return self._blocks[0].interpreter  # type: ignore[union-attr]

    @staticmethod
    def _buckets(interpreter: Any) -> int:
        """Rows of the gathered kernel: the buckets, the word rows and the padding row. (The op
        list is the only place the file states it; every runtime has it.)"""
        tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
        for op in interpreter._get_ops_details():
            if op["op_name"] == "GATHER":
                return int(tensors[op["inputs"][0]]["shape"][0])
        raise ValueError("not an intent model of this version (no GATHER op)")

    def raw(self, features: Occurrences) -> np.ndarray:
        """The output tensor as the model wrote it (int8 or float); valid until the next call."""
        n = min(len(features.ids), self.max_slots)
        size = block_size(n)
        block = self._blocks[size // SLOT_STEP - 1] or self._open(size)
        ids, weights = block.ids[0], block.weights[0]
        ids[:n] = features.ids[:n]
        weights[:n] = features.weights[:n]
        if block.used > n:  # what the previous, longer sentence left
            ids[n : block.used] = self.padding
            weights[n : block.used] = 0.0
        block.used = n
        self._scale[0, 0] = features.scale
        interpreter = block.interpreter
        index_ids, index_weights, index_scale = self._indices
        interpreter.set_tensor(index_ids, block.ids)
        interpreter.set_tensor(index_weights, block.weights)
        interpreter.set_tensor(index_scale, self._scale)
        if self._windows_index is not None:
            if features.windows is None or len(features.windows) != self.windows:
                raise ValueError("the model reads words through its lexicon: featurize with it")
            interpreter.set_tensor(self._windows_index, features.windows[None, :])
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
