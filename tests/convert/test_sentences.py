"""Tests for training-sentence expansion: enumeration, sampling, spans, coverage, determinism."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from random import Random

import pytest

from convert.sentences import (
    NONE_INTENT,
    Example,
    SlotSpan,
    expand_intent,
    expand_negatives,
    expand_spec,
    expand_templates,
    render,
)
from convert.spec import SlotValue, Spec, load_spec
from convert.templates import SlotRef

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*/*.yaml"))


def make_spec(tmp_path: Path, body: str) -> Spec:
    path = tmp_path / "spec.yaml"
    path.write_text("name: t\nlanguage: en\n" + body, encoding="utf-8")
    return load_spec(path)


SMALL = """\
slots:
  room:
    - kitchen
    - "living room | lounge -> living_room"
intents:
  LightOn:
    sentences:
      - "turn on [the] {room} light"
      - "{room} lights on"
none:
  - "what is the weather"
  - "is the {room} warm"
"""


def test_render_records_spans() -> None:
    expansion = ("turn on the ", SlotRef("room"), "s and ", SlotRef("n"))
    text, spans = render(
        expansion, [(SlotValue("living_room", ("lounge",)), "lounge"), (SlotValue(5, ()), "five")]
    )
    assert text == "turn on the lounges and five"
    assert spans == (
        SlotSpan("room", "living_room", "lounge", 12, 18),
        SlotSpan("n", 5, "five", 24, 28),
    )
    with pytest.raises(ValueError, match="1 fills for 2 slot references"):
        render(expansion, [(SlotValue(5, ()), "five")])


def test_small_intent_is_enumerated_in_order(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, SMALL)
    examples = expand_intent(spec.intents[0], spec.slots, 100, random.Random(0))
    assert [e.text for e in examples] == [
        "turn on the kitchen light",
        "turn on the living room light",
        "turn on the lounge light",
        "turn on kitchen light",
        "turn on living room light",
        "turn on lounge light",
        "kitchen lights on",
        "living room lights on",
        "lounge lights on",
    ]
    assert examples[1] == Example(
        "turn on the living room light",
        "LightOn",
        (SlotSpan("room", "living_room", "living room", 12, 23),),
    )


def test_limit_at_count_enumerates_and_below_samples(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, SMALL)
    intent = spec.intents[0]
    everything = expand_intent(intent, spec.slots, 9, random.Random(0))
    assert len(everything) == 9
    sampled = expand_intent(intent, spec.slots, 5, random.Random(0))
    assert len(sampled) == 5
    assert len({e.text for e in sampled}) == 5
    assert {e.text for e in sampled} <= {e.text for e in everything}
    assert expand_intent(intent, spec.slots, 0, random.Random(0)) == []


def test_duplicates_are_removed(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "intents:\n  A:\n    sentences: ['[a] [a] b', 'a b']\n")
    examples = expand_intent(spec.intents[0], spec.slots, 100, random.Random(0))
    assert [e.text for e in examples] == ["a a b", "a b", "b"]


BIG = """\
slots:
  room:
    - kitchen
    - "living room | lounge -> living_room"
    - "office | study | den -> office"
    - bedroom
    - bathroom
  level:
    range: {from: 1, to: 100}
intents:
  Dim:
    sentences:
      - "(dim | set | change) [the] {room} light[s] to {level} [percent]"
      - "{room} [lights] {level}"
      - "dim it"
"""


def test_sampling_is_deterministic_per_seed(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, BIG)
    intent = spec.intents[0]
    first = expand_intent(intent, spec.slots, 200, random.Random(42))
    again = expand_intent(intent, spec.slots, 200, random.Random(42))
    other = expand_intent(intent, spec.slots, 200, random.Random(43))
    assert first == again
    assert first != other
    assert expand_spec(spec, 50, seed=1) == expand_spec(spec, 50, seed=1)
    assert expand_spec(spec, 50, seed=1) != expand_spec(spec, 50, seed=2)


def test_sampling_gives_limit_distinct_and_covers_every_synonym(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, BIG)
    examples = expand_intent(spec.intents[0], spec.slots, 300, random.Random(0))
    assert len(examples) == 300
    assert len({e.text for e in examples}) == 300
    seen = defaultdict(set)
    for example in examples:
        for span in example.slots:
            seen[span.name].add(span.raw)
    for name in ("room", "level"):
        synonyms = {raw for value in spec.slots[name].values for raw in value.synonyms}
        assert seen[name] == synonyms, name


def test_small_templates_are_not_crowded_out(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, BIG)
    examples = expand_intent(spec.intents[0], spec.slots, 50, random.Random(0))
    assert "dim it" in {e.text for e in examples}
    assert any(e.text.split()[0] not in ("dim", "set", "change") for e in examples)


def test_expand_spec_uses_independent_generators_per_intent(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, BIG)
    two = make_spec(tmp_path, BIG + "  Other:\n    sentences: ['{room} other {level}']\n")
    dim_alone = [e for e in expand_spec(spec, 40, seed=3) if e.intent == "Dim"]
    dim_with_other = [e for e in expand_spec(two, 40, seed=3) if e.intent == "Dim"]
    assert dim_alone == dim_with_other


def test_negatives(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, SMALL)
    negatives = expand_negatives(spec, 100, seed=0)
    assert [e.text for e in negatives] == [
        "what is the weather",
        "is the kitchen warm",
        "is the living room warm",
        "is the lounge warm",
    ]
    assert {e.intent for e in negatives} == {NONE_INTENT}
    assert len(expand_negatives(spec, 2, seed=0)) == 2
    assert expand_negatives(make_spec(tmp_path, "intents: {A: {sentences: [a]}}\n")) == []


def test_text_is_single_spaced(tmp_path: Path) -> None:
    spec = make_spec(tmp_path, "intents:\n  A:\n    sentences: ['  [x]  (y |  z ) w[s] [t]  ']\n")
    texts = [e.text for e in expand_intent(spec.intents[0], spec.slots, 100, random.Random(0))]
    for text in texts:
        assert text == " ".join(text.split())
    assert "y ws t" in texts and "z w" in texts


@pytest.fixture(scope="module", params=EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def example_spec(request: pytest.FixtureRequest) -> Spec:
    return load_spec(request.param)


def test_example_spans_point_at_raw_text(example_spec: Spec) -> None:
    examples = expand_spec(example_spec, 300, seed=0) + expand_negatives(example_spec, 300)
    assert examples
    for example in examples:
        assert example.text == " ".join(example.text.split())
        for span in example.slots:
            assert example.text[span.start : span.end] == span.raw
            values = {v.value: v.synonyms for v in example_spec.slots[span.name].values}
            assert span.raw in values[span.value]


def test_example_sentences_do_not_conflict(example_spec: Spec) -> None:
    """No sentence is generated for two intents, or for an intent and as out-of-scope."""
    examples = expand_spec(example_spec, 10**6) + expand_negatives(example_spec, 10**6)
    labels: dict[str, set[str]] = defaultdict(set)
    for example in examples:
        labels[example.text].add(example.intent)
    conflicts = {text: sorted(v) for text, v in labels.items() if len(v) > 1}
    assert conflicts == {}


def test_example_every_template_gets_examples(example_spec: Spec) -> None:
    examples = expand_spec(example_spec, 200, seed=0)
    by_intent: dict[str, set[str]] = defaultdict(set)
    for example in examples:
        by_intent[example.intent].add(example.text)
    for intent in example_spec.intents:
        assert 0 < len(by_intent[intent.name]) <= 200
        for template in intent.templates:
            everything = expand_templates([template], "x", example_spec.slots, 10**6, Random(0))
            assert {e.text for e in everything} & by_intent[intent.name], template.text
