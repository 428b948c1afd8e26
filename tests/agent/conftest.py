"""Fixtures for the daemon's tests. This process must never import TensorFlow: tflite-runtime
(the Pi's interpreter) fails to load beside it."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# A real mosquitto per session for every test that asks for one (fixtures by name).
from tests.agent.broker import auth_broker, broker, certificates, tls_broker  # noqa: F401

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


@pytest.fixture(autouse=True, scope="session")
def _no_tensorflow() -> Iterator[None]:
    yield
    assert "tensorflow" not in sys.modules, "an agent test imported TensorFlow"
