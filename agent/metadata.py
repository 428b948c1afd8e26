"""The model directory's ``model.json``: everything the runtime needs beside the .tflite.

Written by the conversion step, read once at start. A missing, partial or foreign model
directory is refused here with one line that names the file and the problem.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.featurize import FeaturizerConfig
from agent.slots import SlotValue

FORMAT = 2
"""Version of the model directory. 2: ``intent.tflite`` takes a sentence's touched buckets
(``ids`` and ``weights``, see ``agent.tflite.SparseRunner``). A format-1 model (one dense
``[1, dim]`` input) is refused with a request to rebuild it."""
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
    if not (folder / TFLITE_FILE).is_file():
        raise ModelError(f"{folder / TFLITE_FILE}: not found (partial model directory?)")
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
    )
