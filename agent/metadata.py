"""The model directory's ``model.json``: everything the runtime needs beside the .tflite.

Written by the conversion step, read once at start. A missing, partial or foreign model
directory is refused here with one line that names the file and the problem.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agent.featurize import FeaturizerConfig
from agent.files import FileProblem, read_json, read_regular
from agent.slots import SlotValue
from agent.topics import (
    INTENT_NAME_RE,
    MAX_NAME_CHARS,
    PLACEHOLDER_RE,
    SLOT_NAME_RE,
    filled_topic_problem,
    printable,
    text_problem,
    topic_problem,
)

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
    """SHA-256 of ``intent.tflite`` as built (required: a model without it is refused)."""

    @property
    def tflite_path(self) -> Path:
        return self.directory / TFLITE_FILE

    @property
    def grammar_path(self) -> Path:
        return self.directory / GRAMMAR_FILE


MAX_METADATA_BYTES: Final = 16 << 20
"""Largest ``model.json`` read. The example models' are 3-20 kB and the largest a spec can
make (a 20,000-word lexicon, ranges of 10,000 values) about 2 MB; a 400 MB one read whole
would cost the Pi a gigabyte of memory, so the size is checked before reading."""
MAX_TFLITE_BYTES: Final = 64 << 20
"""Largest ``intent.tflite`` read: the example models' are ~0.4 MB and one with a word
branch a few MB; every interpreter block shares the bytes, held in memory once."""
MAX_LABELS: Final = 10_000
MAX_NAME_BYTES: Final = 256
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}\Z")


_EXPECTED: Final = {
    str: "a string",
    int: "a number",
    float: "a number",
    bool: "a boolean",
    list: "a list",
    dict: "an object",
}


def _kind(value: object) -> str:
    """What a JSON value is, for 'expected X, got Y'."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


class _Reader:
    """Typed access to the parsed ``model.json``: every failure names the file and the key."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, key: str, problem: str) -> ModelError:
        return ModelError(printable(f"{self.path}: {key}: {problem}"))

    def get(self, data: dict[str, Any], key: str, *kinds: type, where: str = "") -> Any:
        """``data[key]``, which must be of one of ``kinds`` (a boolean is not a number)."""
        name = f"{where}.{key}" if where else key
        if key not in data:
            raise ModelError(printable(f"{self.path}: missing key '{name}'"))
        value = data[key]
        wrong = isinstance(value, bool) and bool not in kinds
        if wrong or not isinstance(value, kinds):
            expected = " or ".join(dict.fromkeys(_EXPECTED[kind] for kind in kinds))
            raise self.fail(name, f"expected {expected}, got {_kind(value)}")
        return value

    def objects(self, value: object, key: str) -> Iterator[tuple[str, dict[str, Any]]]:
        """The items of a list of objects, each with its key for messages (``key[i]``)."""
        if not isinstance(value, list):
            raise self.fail(key, f"expected a list, got {_kind(value)}")
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                raise self.fail(f"{key}[{index}]", f"expected an object, got {_kind(item)}")
            yield f"{key}[{index}]", item

    def strings(self, value: object, key: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.fail(key, f"expected a list of strings, got {_kind(value)}")
        return tuple(value)

    def name(self, value: str, key: str, pattern: re.Pattern[str], what: str) -> str:
        """A name that goes into topics (``hermes/intent/<name>``, ``{slot}``)."""
        if not pattern.match(value):
            raise self.fail(
                key,
                f"{what} '{value}' is not usable in a topic (letters, digits and '_',"
                f" not starting with a digit, at most {MAX_NAME_CHARS})",
            )
        return value


def check_tflite(tflite: Path, content: bytes, expected: str) -> None:
    """Refuse ``content`` (read from ``tflite``) unless its SHA-256 is ``expected``, the one
    ``model.json`` recorded.

    The TFLite runtimes do not verify the flatbuffer: a truncated copy (a full SD card, an
    interrupted ``scp``) crashes the process with a segmentation fault instead of raising,
    which on a reload would take down the model that was serving. Hashing ~400 kB costs
    about a millisecond.
    """
    if hashlib.sha256(content).hexdigest() != expected.lower():
        raise ModelError(
            f"{tflite}: does not match model.json (SHA-256 differs: truncated, corrupt, or"
            " from another build); copy the whole model directory again"
        )


def read_tflite(tflite: Path) -> bytes:
    """The bytes of ``intent.tflite``, read once, capped (one line on any failure)."""
    try:
        content, _ = read_regular(tflite, MAX_TFLITE_BYTES)
    except FileProblem as problem:
        if str(problem).startswith("cannot read: No such file"):
            raise ModelError(f"{tflite}: not found (partial model directory?)") from None
        raise ModelError(printable(problem.at(tflite))) from None
    return content


def read_metadata_json(path: Path, max_bytes: int = MAX_METADATA_BYTES) -> object:
    """A model directory's JSON file, parsed within bounds (:func:`agent.files.read_json`)."""
    try:
        return read_json(path, max_bytes)
    except FileProblem as problem:
        if str(problem).startswith("cannot read: No such file"):
            folder = path.parent
            raise ModelError(f"{path}: not found (is {folder} a model directory?)") from None
        raise ModelError(printable(problem.at(path))) from None


def _slots(read: _Reader, data: dict[str, Any]) -> dict[str, tuple[SlotValue, ...]]:
    out: dict[str, tuple[SlotValue, ...]] = {}
    for name, values in read.get(data, "slots", dict).items():
        key = f"slots.{name}"
        read.name(name, key, SLOT_NAME_RE, "slot name")
        parsed: list[SlotValue] = []
        for where, item in read.objects(values, key):
            value = read.get(item, "value", str, int, where=where)
            synonyms = read.get(item, "synonyms", list, where=where)
            synonyms = read.strings(synonyms, f"{where}.synonyms")
            parsed.append(SlotValue(value, synonyms))
        out[name] = tuple(parsed)
    return out


def _payload_slots(payload: object) -> set[str]:
    """The ``{slot}`` names in a payload's strings and keys (walked without recursion)."""
    names: set[str] = set()
    stack = [payload]
    while stack:
        node = stack.pop()
        if isinstance(node, str):
            names.update(PLACEHOLDER_RE.findall(node))
        elif isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return names


def _actions(
    read: _Reader, key: str, value: object, slots: tuple[str, ...], lists: dict[str, Any]
) -> tuple[Action, ...]:
    actions: list[Action] = []
    for where, item in read.objects(value, key):
        topic = read.get(item, "topic", str, where=where)
        problem = topic_problem(topic)
        if problem is not None:
            raise read.fail(f"{where}.topic", f"'{topic}' {problem}")
        for slot in dict.fromkeys(PLACEHOLDER_RE.findall(topic)):
            if slot not in slots:
                problem = f"'{topic}' uses {{{slot}}}, not a slot of the intent"
                raise read.fail(f"{where}.topic", problem)
            for choice in lists[slot]:
                problem = filled_topic_problem(topic, slot, str(choice.value))
                if problem is not None:
                    raise read.fail(
                        f"{where}.topic",
                        f"slot '{slot}' value '{choice.value}' cannot fill '{topic}': it {problem}",
                    )
        payload = item.get("payload")
        for slot in _payload_slots(payload):
            if slot not in slots:
                problem = f"uses {{{slot}}}, not a slot of the intent"
                raise read.fail(f"{where}.payload", problem)
        retain = item.get("retain", False)
        if not isinstance(retain, bool):
            raise read.fail(f"{where}.retain", f"expected a boolean, got {_kind(retain)}")
        actions.append(Action(topic, payload, retain))
    return tuple(actions)


def _intents(
    read: _Reader, data: dict[str, Any], lists: dict[str, tuple[SlotValue, ...]]
) -> dict[str, IntentInfo]:
    intents: dict[str, IntentInfo] = {}
    for name, info in read.get(data, "intents", dict).items():
        key = f"intents.{name}"
        read.name(name, key, INTENT_NAME_RE, "intent name")
        if not isinstance(info, dict):
            raise read.fail(key, f"expected an object, got {_kind(info)}")
        slots = read.strings(read.get(info, "slots", list, where=key), f"{key}.slots")
        required = read.strings(read.get(info, "required", list, where=key), f"{key}.required")
        unknown = [s for s in slots if s not in lists] + [s for s in required if s not in slots]
        if unknown:
            raise read.fail(f"{key}.slots", f"slot '{unknown[0]}' is not defined")
        actions = _actions(read, f"{key}.actions", info.get("actions"), slots, lists)
        intents[name] = IntentInfo(name, slots, required, actions)
    return intents


def load_model_info(directory: str | Path) -> ModelInfo:
    """Read and check ``directory/model.json`` and the .tflite beside it.

    Every file is read within a size cap and ``model.json`` against its schema (types,
    names and topics under :mod:`agent.topics`' rule, featurizer sizes), and
    ``intent.tflite`` must have the SHA-256 it records; any failure is one line naming the
    file, before anything is allocated from the file's contents.
    """
    folder = Path(directory)
    path = folder / METADATA_FILE
    if not folder.is_dir():
        raise ModelError(printable(f"{folder}: model directory not found"))
    data = read_metadata_json(path)
    if not isinstance(data, dict):
        raise ModelError(printable(f"{path}: expected a JSON object"))
    read = _Reader(path)
    fmt = read.get(data, "format", int)
    if fmt != FORMAT:
        raise ModelError(
            f"{path}: model format {fmt} is not supported by this version (expected {FORMAT});"
            " rebuild the model with 'voice-agent convert'"
        )
    name = read.get(data, "name", str)
    language = read.get(data, "language", str)
    version = data.get("version", "1")
    for key, text in (("name", name), ("language", language), ("version", version)):
        problem = text_problem(text, MAX_NAME_BYTES) if isinstance(text, str) else "not a string"
        if problem is not None:
            raise read.fail(key, problem)
    spec_sha256 = data.get("spec_sha256", "")
    if not isinstance(spec_sha256, str):
        raise read.fail("spec_sha256", f"expected a string, got {_kind(spec_sha256)}")
    if "tflite_sha256" not in data:
        raise ModelError(
            f"{path}: missing key 'tflite_sha256' (the checksum of {TFLITE_FILE}): rebuild"
            " the model with 'voice-agent convert' or record it with 'python -m convert.stamp"
            f" {folder}'"
        )
    checksum = read.get(data, "tflite_sha256", str).lower()
    if not _SHA256_RE.match(checksum):
        raise read.fail("tflite_sha256", "expected 64 hex digits")
    # Checked before anything else is built from the file: a truncated flatbuffer would
    # crash the runtime outright (see check_tflite).
    check_tflite(folder / TFLITE_FILE, read_tflite(folder / TFLITE_FILE), checksum)
    try:
        featurizer = FeaturizerConfig.from_json(read.get(data, "featurizer", dict))
    except (TypeError, ValueError) as err:
        raise read.fail("featurizer", str(err).removeprefix("featurizer ")) from None
    labels = read.strings(read.get(data, "labels", list), "labels")
    if not 0 < len(labels) <= MAX_LABELS:
        raise read.fail("labels", f"expected 1 to {MAX_LABELS} labels, got {len(labels)}")
    slots = _slots(read, data)
    intents = _intents(read, data, slots)
    threshold = float(read.get(data, "threshold", int, float))
    # A label without an intent would fail at the first command that hits it, not here.
    orphans = [label for label in labels if label != NONE_LABEL and label not in intents]
    if orphans or len(set(labels)) != len(labels):
        problem = f"label '{orphans[0]}' has no intent" if orphans else "a label repeats"
        raise ModelError(printable(f"{path}: labels do not match intents ({problem})"))
    if not 0.0 <= threshold <= 1.0:
        raise ModelError(f"{path}: threshold {threshold:g} is not a probability (0 to 1)")
    return ModelInfo(
        directory=folder,
        name=name,
        language=language,
        version=version,
        spec_sha256=spec_sha256,
        labels=labels,
        threshold=threshold,
        featurizer=featurizer,
        slots=slots,
        intents=intents,
        tflite_sha256=checksum,
    )
