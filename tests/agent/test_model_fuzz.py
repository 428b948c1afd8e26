"""Hostile model directories: refused with one line naming a file, or usable.

The Korean model with its files edited (tests/fuzzing.py): model.json values of the wrong
type or absurd size, names and topics that break the topic rule, lone surrogates, deep
nesting, byte damage; grammar.json nested, huge, a FIFO; intent.tflite truncated, flipped,
from another build, huge. A directory that loads must also classify and render its
messages with valid topics. bench/fuzz.py runs the same strategy with thousands of cases.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given

from tests.fuzzing import ModelPlan, check_model, fuzz_settings, model_plans


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    memory = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=memory if memory.is_dir() else None) as folder:
        yield Path(folder)


@fuzz_settings(300)
@given(plan=model_plans)
def test_fuzzed_model_directories(scratch: Path, plan: ModelPlan) -> None:
    check_model(scratch / "model", plan)


def test_the_untouched_model_is_accepted(scratch: Path) -> None:
    plan = ModelPlan(values=(), metadata_bytes=(), grammar="keep", tflite="keep")
    assert check_model(scratch / "model", plan) == "accepted"
