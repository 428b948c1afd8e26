"""The model directory's ``model.json``: everything the runtime needs beside the .tflite.

Written by the conversion step, read once at start. A missing, partial or foreign model
directory is refused here with one line that names the file and the problem.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.featurize import FeaturizerConfig
from agent.slots import SlotValue

FORMAT = 4
"""Version of the model directory. 4: ``intent.tflite`` takes a sentence's feature
occurrences at any length (``ids``, ``weights`` and ``scale``, see
``agent.tflite.SparseRunner``). Older models (format 1: one dense ``[1, dim]`` input; 2:
bucket ids with float weights; 3: fixed-length ``words`` and ``chars``) are refused with a
request to rebuild them."""
METADATA_FILE = "model.json"
TFLITE_FILE = "intent.tflite"
GRAMMAR_FILE = "grammar.json"
NONE_LABEL = "<none>"


class ModelError(Exception):
    """A model directory that cannot be used; ``str()`` is one line for humans."""


@dataclass(frozen=True)
class Action:
    """An MQTT message to publish when the intent is recognized.

    ``topic`` and the strings of ``payload`` (any JSON value; None is an empty message) may
    hold ``{slot}``; a string that is exactly ``"{slot}"`` becomes the typed slot value.
    """

    topic: str
    payload: Any = None
    retain: bool = False


@dataclass(frozen=True)
class IntentInfo:
    """What the runtime knows of an intent: its slots, which are required, its actions."""

    name: str
    slots: tuple[str, ...]
    required: tuple[str, ...]
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class ModelInfo:
    """Parsed ``model.json`` of one model directory."""

    directory: Path
    name: str
    language: str
    version: str
    spec_sha256: str
    labels: tuple[str, ...]
    threshold: float
    featurizer: FeaturizerConfig
    slots: dict[str, tuple[SlotValue, ...]]
    intents: dict[str, IntentInfo]
    tflite_sha256: str = ""
    """SHA-256 of ``intent.tflite`` as built; empty for models from before it was recorded."""

    @property
    def tflite_path(self) -> Path:
        return self.directory / TFLITE_FILE

    @property
    def grammar_path(self) -> Path:
        return self.directory / GRAMMAR_FILE


def _require(data: dict[str, Any], key: str, kind: type | tuple[type, ...], where: Path) -> Any:
    if key not in data:
        raise ModelError(f"{where}: missing key '{key}'")
    value = data[key]
    if not isinstance(value, kind):
        raise ModelError(f"{where}: key '{key}' has the wrong type")
    return value


def check_tflite(tflite: Path, content: bytes, expected: str) -> None:
    """Refuse ``content`` (read from ``tflite``) unless its SHA-256 is ``expected``, the one
    ``model.json`` recorded (empty: a model from before the checksum, not checked).

    The TFLite runtimes do not verify the flatbuffer: a truncated copy (a full SD card, an
    interrupted ``scp``) crashes the process with a segmentation fault instead of raising,
    which on a reload would take down the model that was serving. Hashing ~400 kB costs
    about a millisecond.
    """
    if expected and hashlib.sha256(content).hexdigest() != expected.lower():
        raise ModelError(
            f"{tflite}: does not match model.json (SHA-256 differs: truncated, corrupt, or"
            " from another build); copy the whole model directory again"
        )


def load_model_info(directory: str | Path) -> ModelInfo:
    """Read and check ``directory/model.json`` and that the .tflite beside it exists."""
    folder = Path(directory)
    path = folder / METADATA_FILE
    if not folder.is_dir():
        raise ModelError(f"{folder}: model directory not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"{path}: not found (is {folder} a model directory?)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ModelError(f"{path}: cannot read: {err}") from None
    except json.JSONDecodeError as err:
        raise ModelError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    fmt = _require(data, "format", int, path)
    if fmt != FORMAT:
        raise ModelError(
            f"{path}: model format {fmt} is not supported by this version (expected {FORMAT});"
            " rebuild the model with 'voice-agent convert'"
        )
    tflite = folder / TFLITE_FILE
    if not tflite.is_file():
        raise ModelError(f"{tflite}: not found (partial model directory?)")
    checksum = data.get("tflite_sha256", "")
    if not isinstance(checksum, str):
        raise ModelError(f"{path}: key 'tflite_sha256' has the wrong type")
    try:
        check_tflite(tflite, tflite.read_bytes(), checksum)
    except OSError as err:
        raise ModelError(f"{tflite}: cannot read: {err.strerror or err}") from None
    try:
        featurizer = FeaturizerConfig.from_json(_require(data, "featurizer", dict, path))
        labels = tuple(str(x) for x in _require(data, "labels", list, path))
        slots = {
            str(name): tuple(
                SlotValue(v["value"], tuple(str(s) for s in v["synonyms"])) for v in values
            )
            for name, values in _require(data, "slots", dict, path).items()
        }
        intents = {
            str(name): IntentInfo(
                name=str(name),
                slots=tuple(info["slots"]),
                required=tuple(info["required"]),
                actions=tuple(
                    Action(a["topic"], a["payload"], bool(a.get("retain", False)))
                    for a in info["actions"]
                ),
            )
            for name, info in _require(data, "intents", dict, path).items()
        }
        threshold = float(_require(data, "threshold", (int, float), path))
    except ModelError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ModelError(
            f"{path}: malformed model metadata ({type(err).__name__}: {err})"
        ) from None
    # A label without an intent would fail at the first command that hits it, not here.
    orphans = [label for label in labels if label != NONE_LABEL and label not in intents]
    if orphans or len(set(labels)) != len(labels):
        problem = f"label '{orphans[0]}' has no intent" if orphans else "a label repeats"
        raise ModelError(f"{path}: labels do not match intents ({problem})")
    if not 0.0 <= threshold <= 1.0:
        raise ModelError(f"{path}: threshold {threshold:g} is not a probability (0 to 1)")
    return ModelInfo(
        directory=folder,
        name=str(_require(data, "name", str, path)),
        language=str(_require(data, "language", str, path)),
        version=str(data.get("version", "1")),
        spec_sha256=str(data.get("spec_sha256", "")),
        labels=labels,
        threshold=threshold,
        featurizer=featurizer,
        slots=slots,
        intents=intents,
        tflite_sha256=checksum,
    )
