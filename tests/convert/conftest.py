"""Fixtures for the conversion step: real TensorFlow, real models built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


@pytest.fixture(scope="session")
def built_ko(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Korean example built with every technique on (teacher, pruning, int8)."""
    from convert.build import BuildOptions, build
    from convert.spec import load_spec

    output = tmp_path_factory.mktemp("models") / "ko"
    build(
        load_spec(EXAMPLES / "ko/smart-home.yaml"), output, BuildOptions(epochs=15), lambda _: None
    )
    return output


@pytest.fixture(scope="session")
def built_en(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The English example, built as shipped."""
    from convert.build import BuildOptions, build
    from convert.spec import load_spec

    output = tmp_path_factory.mktemp("models") / "en"
    build(load_spec(EXAMPLES / "en/smart-home.yaml"), output, BuildOptions(), lambda _: None)
    return output
