"""Hostile intent specs: only a Spec or a one-line SpecError naming the file (and line).

The inputs (tests/fuzzing.py) are mostly real specs (the examples and the bad-spec
fixtures) with a few hostile edits: keys dropped, duplicated or swapped, values of the
wrong type, broken templates (unbalanced brackets, empty alternatives, unknown slots,
deep nesting, absurd expansion counts), YAML tags and aliases, BOMs, bytes that are not
UTF-8 and very long lines; plus YAML-ish noise and random bytes. bench/fuzz.py runs the
same strategy with thousands of examples.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given

from convert.spec import SpecError, load_spec
from tests.fuzzing import (
    check_spec,
    check_spec_topics,
    fuzz_settings,
    spec_inputs,
    spec_topic_inputs,
)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    memory = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=memory if memory.is_dir() else None) as folder:
        yield Path(folder)


@fuzz_settings(500)
@given(data=spec_inputs)
def test_fuzzed_specs(scratch: Path, data: bytes) -> None:
    check_spec(scratch / "fuzz.yaml", data)


@fuzz_settings(300)
@given(data=spec_topic_inputs)
def test_fuzzed_topics_slot_values_and_payloads(scratch: Path, data: bytes) -> None:
    """What the build accepts, the runtime publishes: every topic valid for every slot
    value, no action skipped, JSON-text payloads objects."""
    check_spec_topics(scratch / "topics.yaml", data)


HEAD = "name: test\nlanguage: en\nslots:\n  room: [kitchen, hall]\nintents:\n"


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        # YAML escapes put line breaks into names and templates: found by the fuzzer, the
        # messages held a raw \r, U+2028 or U+0085 and printed as two lines.
        ('  "A\\rB": {sentences: [x]}\n', "6: invalid intent name 'A\\u000dB'"),
        ('  "A\\u2028B": {sentences: [x]}\n', "6: invalid intent name 'A\\u2028B'"),
        (
            '  A: {sentences: ["x\\x85(y"]}\n',
            "6: intent 'A': unclosed '(' at column 3 in \"x\\u0085(y\"",
        ),
    ],
)
def test_line_breaks_in_names_stay_on_one_line(tmp_path: Path, body: str, problem: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(HEAD + body, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}:{problem}")
    assert len(str(info.value).splitlines()) == 1


def test_absurd_templates_load_fast_or_fail_in_one_line(tmp_path: Path) -> None:
    """4**40 expansions, 40-deep nesting, a 200,000-character line: parsed, never expanded."""
    path = tmp_path / "spec.yaml"
    cases = {
        "(a | b | c | d) " * 40: None,
        "(" * 40 + "a" + ")" * 40: "groups nested deeper than 32 levels",
        "[" * 40 + "a" + "]" * 40: "groups nested deeper than 32 levels",
        "x" * 200_000: None,
        "{room} " * 500: None,
    }
    for template, problem in cases.items():
        path.write_text(HEAD + f'  A: {{sentences: ["{template}"]}}\n', encoding="utf-8")
        if problem is None:
            assert load_spec(path).intents[0].name == "A"
        else:
            with pytest.raises(SpecError, match=problem):
                load_spec(path)


def test_a_spec_that_never_ends_is_refused() -> None:
    with pytest.raises(SpecError) as info:
        load_spec("/dev/zero")
    assert str(info.value) == "/dev/zero: too large for a spec (over 16 MiB)"
