"""A model directory that is missing, partial or foreign is refused with one clear line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from agent.classifier import IntentClassifier
from agent.metadata import ModelError, load_model_info


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


def _without_checksum(model: Path) -> None:
    """Drop model.json's tflite_sha256 (as in models built before it existed), so that the
    checks behind the checksum are reached; the checksum itself: test_reload.py."""
    data = json.loads((model / "model.json").read_text())
    del data["tflite_sha256"]
    (model / "model.json").write_text(json.dumps(data))


def test_tflite_from_another_model(copy: Path, ko_model: Path) -> None:
    _without_checksum(copy)
    shutil.copy(ko_model / "intent.tflite", copy / "intent.tflite")
    assert _error(copy) == (
        f"{copy}/intent.tflite: tensor shapes do not match model.json"
        " (was the directory assembled from different builds?)"
    )


def test_corrupt_tflite(copy: Path) -> None:
    _without_checksum(copy)
    (copy / "intent.tflite").write_bytes(b"not a flatbuffer")
    assert _error(copy).startswith(f"{copy}/intent.tflite: cannot load: ")
