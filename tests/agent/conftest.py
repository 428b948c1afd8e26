"""Fixtures for the daemon's tests. This process must never import TensorFlow: tflite-runtime
(the Pi's interpreter) fails to load beside it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.classifier import IntentClassifier
from agent.mqtt import MqttLink, MqttSettings

# A real mosquitto per session for every test that asks for one (fixtures by name).
from tests.agent.broker import (  # noqa: F401
    HOST,
    Mosquitto,
    auth_broker,
    broker,
    certificates,
    tls_broker,
)
from tests.agent.command import voice_agent
from tests.vectors import write_vectors

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"


@pytest.fixture(scope="session")
def en_model() -> Path:
    """The committed English example model, as a Pi would run it."""
    return MODELS / "smart-home-en"


@pytest.fixture(scope="session")
def ko_model() -> Path:
    """The committed Korean example model (used by the offline speech tests)."""
    return MODELS / "smart-home-ko"


@pytest.fixture(scope="module")
def ko_classifier(ko_model: Path) -> IntentClassifier:
    """The Korean model's classifier, loaded once per test module."""
    return IntentClassifier.load(ko_model)


@pytest.fixture()
def link(broker: Mosquitto) -> Iterator[MqttLink]:  # noqa: F811 - the fixture above
    """A connected MQTT link to the session's mosquitto, as the daemon publishes through.
    Its retained availability stays out of ``voice-agent/#``, which other tests watch."""
    settings = MqttSettings(
        HOST, broker.port, client_id="test-link", availability_topic="test-link/availability"
    )
    link = MqttLink(settings)
    link.start()
    assert link.wait_connected(10)
    yield link
    link.stop()


@pytest.fixture(scope="session")
def branch_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Korean example with a word branch (random vectors for its words), built by
    ``voice-agent convert`` in a process of its own: TensorFlow must stay out of this one."""
    work = tmp_path_factory.mktemp("branch")
    grammar = json.loads((MODELS / "smart-home-ko/grammar.json").read_text(encoding="utf-8"))
    words = sorted({w for phrase in grammar for w in phrase.split()} - {"[unk]"})
    vectors = write_vectors(work / "ko.vec", words)
    spec = str(ROOT / "examples/ko/smart-home.yaml")
    quick = ("--epochs", "5", "--teacher", "none", "--prune", "0", "--no-refit", "-q")
    out = voice_agent(
        "convert", spec, "-o", str(work / "m"), "--word-vectors", str(vectors), *quick, timeout=600
    )
    assert out.returncode == 0, out.stderr
    return work / "m"


@pytest.fixture(autouse=True, scope="session")
def _no_tensorflow() -> Iterator[None]:
    yield
    assert "tensorflow" not in sys.modules, "an agent test imported TensorFlow"
