"""Fixtures for the daemon's tests. This process must never import TensorFlow: tflite-runtime
(the Pi's interpreter) fails to load beside it."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# A real mosquitto per session for every test that asks for one (fixtures by name).
from tests.agent.broker import auth_broker, broker, certificates, tls_broker  # noqa: F401
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
