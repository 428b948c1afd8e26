"""Open a .tflite file with whichever TFLite runtime is installed.

The Pi uses ``tflite_runtime`` (no TensorFlow there); ``ai_edge_litert`` is its renamed
successor, and ``tensorflow.lite`` is the last resort on a workstation.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

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
