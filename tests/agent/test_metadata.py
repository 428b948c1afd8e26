"""A model directory that is missing, partial or foreign is refused with one clear line."""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.classifier import IntentClassifier
from agent.metadata import ModelError, load_model_info
from agent.recognizer import RecognizerError, load_grammar
from convert.stamp import stamp


@pytest.fixture
def copy(en_model: Path, tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(en_model, target)
    return target


def _error(directory: Path) -> str:
    with pytest.raises(ModelError) as err:
        IntentClassifier.load(directory)
    return str(err.value)


def test_loads(en_model: Path) -> None:
    info = load_model_info(en_model)
    assert info.name == "smart-home-en"
    assert info.labels[-1] == "<none>"
    assert 0.3 <= info.threshold < 1
    assert info.intents["LightOn"].required == ("room",)


def test_missing_directory(tmp_path: Path) -> None:
    assert _error(tmp_path / "nope") == f"{tmp_path / 'nope'}: model directory not found"


def test_missing_metadata(copy: Path) -> None:
    (copy / "model.json").unlink()
    assert _error(copy) == f"{copy}/model.json: not found (is {copy} a model directory?)"


def test_partial_directory(copy: Path) -> None:
    (copy / "intent.tflite").unlink()
    assert _error(copy) == f"{copy}/intent.tflite: not found (partial model directory?)"


def test_invalid_json(copy: Path) -> None:
    (copy / "model.json").write_text('{"format": 1,\n  "name": }')
    assert _error(copy) == f"{copy}/model.json:2: invalid JSON: Expecting value"


@pytest.mark.parametrize("fmt", [1, 2, 3, 99])
def test_other_format(copy: Path, fmt: int) -> None:
    # Format 1 is the dense-input model (one [1, dim] input), format 2 took bucket ids and
    # float weights, format 3 fixed-length words and chars: this runtime feeds none.
    data = json.loads((copy / "model.json").read_text())
    data["format"] = fmt
    (copy / "model.json").write_text(json.dumps(data))
    assert _error(copy) == (
        f"{copy}/model.json: model format {fmt} is not supported by this version (expected 4);"
        " rebuild the model with 'voice-agent convert'"
    )


def test_missing_key(copy: Path) -> None:
    data = json.loads((copy / "model.json").read_text())
    del data["labels"]
    (copy / "model.json").write_text(json.dumps(data))
    assert _error(copy) == f"{copy}/model.json: missing key 'labels'"


def test_tflite_from_another_model(copy: Path, ko_model: Path) -> None:
    shutil.copy(ko_model / "intent.tflite", copy / "intent.tflite")
    stamp(copy)  # so that the checks behind the checksum are reached
    assert _error(copy) == (
        f"{copy}/intent.tflite: tensor shapes do not match model.json"
        " (was the directory assembled from different builds?)"
    )


def test_corrupt_tflite(copy: Path) -> None:
    (copy / "intent.tflite").write_bytes(b"not a flatbuffer")
    stamp(copy)
    assert _error(copy).startswith(f"{copy}/intent.tflite: cannot load: ")


# -- hostile model directories: bounded, typed, one line each -----------------------------


def _edit(model: Path, change: Callable[[dict[str, Any]], None]) -> None:
    data = json.loads((model / "model.json").read_text())
    change(data)
    (model / "model.json").write_text(json.dumps(data))


def _topic(data: dict[str, Any], topic: object) -> None:
    data["intents"]["LightOn"]["actions"][0]["topic"] = topic


BROKEN: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "intent named Light#On": (
        lambda d: (
            d["intents"].__setitem__("Light#On", d["intents"].pop("LightOn")),
            d["labels"].__setitem__(0, "Light#On"),
        ),
        "intents.Light#On: intent name 'Light#On' is not usable in a topic (letters, digits"
        " and '_', not starting with a digit, at most 256)",
    ),
    "intent name of 300 characters": (
        lambda d: (
            d["intents"].__setitem__("L" * 300, d["intents"].pop("LightOn")),
            d["labels"].__setitem__(0, "L" * 300),
        ),
        f"intents.{'L' * 300}: intent name '{'L' * 300}' is not usable in a topic (letters,"
        " digits and '_', not starting with a digit, at most 256)",
    ),
    "numeric topic": (
        lambda d: _topic(d, 5),
        "intents.LightOn.actions[0].topic: expected a string, got a number",
    ),
    "topic with DEL": (
        lambda d: _topic(d, "z2m/{room}\x7f"),
        "intents.LightOn.actions[0].topic: 'z2m/{room}\\u007f' holds the control character U+007F",
    ),
    "topic under $SYS": (
        lambda d: _topic(d, "$SYS/{room}"),
        "intents.LightOn.actions[0].topic: '$SYS/{room}' starts with '$' (reserved for the"
        " broker, like $SYS)",
    ),
    "slot value with a slash": (
        lambda d: d["slots"]["room"].append({"value": "first/floor", "synonyms": ["first"]}),
        "intents.LightOn.actions[0].topic: slot 'room' value 'first/floor' cannot fill"
        " 'zigbee2mqtt/{room}_light/set': it holds '/', which would add a topic level",
    ),
    "payload with a slot the intent lacks": (
        lambda d: d["intents"]["LightOn"]["actions"][0].update(payload={"x": ["{nosuch}"]}),
        "intents.LightOn.actions[0].payload: uses {nosuch}, not a slot of the intent",
    ),
    "positions of 10**12": (
        lambda d: d["featurizer"].update(positions=10**12),
        "featurizer: positions must be an integer from 1 to 512, not 1000000000000",
    ),
    "boolean format": (
        lambda d: d.update(format=True),
        "format: expected a number, got a boolean",
    ),
    "threshold NaN": (
        lambda d: d.update(threshold="0.5"),
        "threshold: expected a number, got a string",
    ),
    "synonyms not a list": (
        lambda d: d["slots"]["room"][0].update(synonyms="kitchen"),
        "slots.room[0].synonyms: expected a list, got a string",
    ),
    "retain not a boolean": (
        lambda d: d["intents"]["LightOn"]["actions"][0].update(retain="yes"),
        "intents.LightOn.actions[0].retain: expected a boolean, got a string",
    ),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_model_json_that_would_fail_later_is_refused_at_load(copy: Path, case: str) -> None:
    change, problem = BROKEN[case]
    _edit(copy, change)
    assert _error(copy) == f"{copy}/model.json: {problem}"


def test_a_lone_surrogate_is_refused_at_load(copy: Path) -> None:
    # json.loads accepts "\ud800"; writing it to a log or a topic fails at the first command.
    text = (copy / "model.json").read_text().replace('"kitchen"', '"kitchen\\ud800"', 1)
    (copy / "model.json").write_text(text)
    assert _error(copy) == (
        f"{copy}/model.json: holds a lone surrogate (\\ud800), which is not UTF-8"
    )


@pytest.mark.parametrize("name", ["model.json", "grammar.json"])
def test_json_nested_100000_deep_is_one_line(copy: Path, name: str) -> None:
    (copy / name).write_text("[" * 100_000 + "]" * 100_000)
    if name == "model.json":
        message = _error(copy)
    else:
        with pytest.raises(RecognizerError) as info:
            load_grammar(copy)
        message = str(info.value)
    assert message == f"{copy}/{name}: invalid JSON: nested deeper than 100 levels"


def test_a_huge_model_json_is_refused_without_reading_it(copy: Path) -> None:
    with (copy / "model.json").open("r+b") as file:
        file.truncate(400 << 20)  # sparse: 400 MB that cost no disk
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert _error(copy) == f"{copy}/model.json: too large (400 MiB; at most 16 MiB)"
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 50_000, f"peak memory grew by {grown_kib} KiB"


def test_a_fifo_model_json_is_refused_at_once(copy: Path) -> None:
    (copy / "model.json").unlink()
    os.mkfifo(copy / "model.json")
    assert _error(copy) == f"{copy}/model.json: not a regular file (a FIFO)"


def test_a_truncated_tflite_without_checksum_is_refused_before_the_runtime(copy: Path) -> None:
    # Without the checksum the runtime would get the truncated flatbuffer and crash (SIGSEGV).
    _edit(copy, lambda d: d.pop("tflite_sha256"))
    data = (copy / "intent.tflite").read_bytes()
    (copy / "intent.tflite").write_bytes(data[: len(data) // 2])
    assert _error(copy) == (
        f"{copy}/model.json: missing key 'tflite_sha256' (the checksum of intent.tflite):"
        f" rebuild the model with 'voice-agent convert' or record it with"
        f" 'python -m convert.stamp {copy}'"
    )


def test_a_huge_tflite_is_refused(copy: Path) -> None:
    with (copy / "intent.tflite").open("r+b") as file:
        file.truncate(65 << 20)
    assert _error(copy) == f"{copy}/intent.tflite: too large (65 MiB; at most 64 MiB)"


def test_stamping_records_the_checksum_deterministically(copy: Path, en_model: Path) -> None:
    _edit(copy, lambda d: d.pop("tflite_sha256"))
    (copy / "model.json").write_text(
        json.dumps(json.loads((copy / "model.json").read_text()), indent=2, ensure_ascii=False)
        + "\n"
    )
    digest = stamp(copy)
    assert digest == hashlib.sha256((copy / "intent.tflite").read_bytes()).hexdigest()
    # The committed model.json is exactly what stamping writes.
    assert (copy / "model.json").read_bytes() == (en_model / "model.json").read_bytes()
    assert load_model_info(copy).tflite_sha256 == digest
