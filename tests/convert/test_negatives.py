"""Out-of-scope word salads made of the spec's own words, in the set a build trains on."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.metadata import NONE_LABEL
from convert.build import BuildOptions, salad, training_set
from convert.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
KO_ROOMS = {"거실", "주방", "부엌", "침실", "안방"}


@pytest.fixture(scope="module")
def korean() -> tuple[list[str], set[str]]:
    """The Korean example's training set: out-of-scope texts, and the commands' texts."""
    examples, negatives = training_set(
        load_spec(ROOT / "examples/ko/smart-home.yaml"), BuildOptions()
    )
    assert all(n.intent == NONE_LABEL for n in negatives)
    return [n.text for n in negatives], {e.text for e in examples}


def test_the_training_set_holds_word_salads(korean: tuple[list[str], set[str]]) -> None:
    negatives, commands = korean
    spec = load_spec(ROOT / "examples/ko/smart-home.yaml")
    salads = {s.text for s in salad(spec, training_set(spec, BuildOptions())[0], set(), 600, 0)}
    assert len(salads) >= 500
    assert len(salads & set(negatives)) >= 500  # built into the training set
    assert not set(negatives) & commands
    two_rooms = [t for t in negatives if len(KO_ROOMS & set(t.split())) >= 2]
    repeated = [t for t in negatives if _halves_equal(t.split())]
    assert len(two_rooms) >= 300 and len(repeated) >= 20
    # The salad of the issue this answers: a command with a second room is out of scope.
    assert any(t.endswith("불 끄기") and len(t.split()) == 4 for t in two_rooms)


def test_no_salad_is_a_command_in_disguise(korean: tuple[list[str], set[str]]) -> None:
    # Apart from naming two rooms, no salad holds every word of a command (which could be
    # that command reordered, or with a filler word around it).
    negatives, commands = korean
    bags = [frozenset(c.split()) for c in commands]
    for text in negatives:
        words = set(text.split())
        if len(KO_ROOMS & words) < 2:
            assert not any(bag <= words for bag in bags), text


def test_no_salad_is_a_command_short_of_one_word() -> None:
    # "no more light in the" (the command without its room) taught as chatter cost the
    # English model the command itself: such near misses are left out.
    spec = load_spec(ROOT / "examples/en/smart-home.yaml")
    examples, _ = training_set(spec, BuildOptions(noise=0, salad=0))
    bags = [frozenset(e.text.split()) for e in examples]
    rooms = {raw for value in spec.slots["room"].values for raw in value.synonyms}
    for text in (s.text for s in salad(spec, examples, set(), 600, 0)):
        named = [room for room in rooms if f" {room} " in f" {text} "]
        if len(named) < 2:
            assert not any(len(bag - set(text.split())) <= 1 for bag in bags), text


def test_salads_are_deterministic() -> None:
    spec = load_spec(ROOT / "examples/en/smart-home.yaml")
    examples, _ = training_set(spec, BuildOptions(noise=0, salad=0))
    first = salad(spec, examples, set(), 300, 0)
    assert first == salad(spec, examples, set(), 300, 0)
    assert first != salad(spec, examples, set(), 300, 1)


def test_salad_can_be_turned_off() -> None:
    spec = load_spec(ROOT / "examples/ko/smart-home.yaml")
    with_salad = training_set(spec, BuildOptions())[1]
    without = training_set(spec, BuildOptions(salad=0))[1]
    assert len(with_salad) - len(without) >= 500


def _halves_equal(words: list[str]) -> bool:
    half = len(words) // 2
    return len(words) % 2 == 0 and half > 0 and words[:half] == words[half:]
