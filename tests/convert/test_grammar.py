"""Tests for the Vosk grammar vocabulary computed from the template AST."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convert.grammar import template_words, vosk_vocabulary
from convert.sentences import expand_negatives, expand_spec
from convert.spec import load_spec
from convert.templates import SlotRef, TemplateError, parse_template

ROOT = Path(__file__).resolve().parents[2]


def brute_force_words(text: str, synonyms: dict[str, list[str]]) -> frozenset[str]:
    """Words by full expansion: every expansion with every combination of slot synonyms."""
    words: set[str] = set()
    for expansion in parse_template(text).expand():
        refs = [piece for piece in expansion if isinstance(piece, SlotRef)]
        for fills in itertools.product(*(synonyms[ref.name] for ref in refs)):
            it = iter(fills)
            sentence = "".join(p if isinstance(p, str) else next(it) for p in expansion)
            words.update(sentence.split())
    return frozenset(words)


SYNONYMS = {"room": ["living room", "kitchen", "big dining room"], "n": ["5", "five"]}


@pytest.mark.parametrize(
    "text",
    [
        "turn on [the] {room} light[s]",
        "{room}s (a|b)(c|d)[e] x",
        "[pre]{room}[post] | {n}",
        "set (it | {room} (lamp | light)[s]) to {n}[%]",
        "x{room}{n}y",
    ],
)
def test_template_words_match_brute_force(text: str) -> None:
    template = parse_template(text)
    assert template_words(template, SYNONYMS) == brute_force_words(text, SYNONYMS)


def test_glued_words() -> None:
    words = template_words(parse_template("the {room}s light[s]"), {"room": ["living room"]})
    assert words == {"the", "living", "rooms", "light", "lights"}


@settings(max_examples=300, deadline=None)
@given(st.text(st.sampled_from(list("()[]| ab{}")), max_size=16), st.booleans())
def test_template_words_property(text: str, multiword: bool) -> None:
    text = text.replace("{}", "{room}")
    try:
        template = parse_template(text)
    except TemplateError:
        return
    if template.count() > 2000:
        return
    # "{a}" is a slot too: every slot the template names gets the same values.
    names = {p.name for e in template.expand() for p in e if isinstance(p, SlotRef)}
    values = ["big room", "hall"] if multiword else ["hall", "den"]
    synonyms = {name: values for name in names | {"room"}}
    assert template_words(template, synonyms) == brute_force_words(text, synonyms)


def test_vocabulary_of_small_spec(tmp_path: Path) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(
        """\
name: t
language: en
slots:
  room: ["Living Room | lounge -> living_room", kitchen]
  unused: ["garden shed"]
intents:
  LightOn:
    sentences: ["Turn on [the] {room} light[s]"]
none:
  - "tell me a joke"
""",
        encoding="utf-8",
    )
    assert vosk_vocabulary(load_spec(path)) == [
        "a",
        "garden",
        "joke",
        "kitchen",
        "light",
        "lights",
        "living",
        "lounge",
        "me",
        "on",
        "room",
        "shed",
        "tell",
        "the",
        "turn",
    ]


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_example_vocabulary_covers_every_example(lang: str) -> None:
    spec = load_spec(ROOT / f"examples/{lang}/smart-home.yaml")
    vocabulary = vosk_vocabulary(spec)
    assert vocabulary == sorted(set(vocabulary))
    assert all(word == word.lower() and " " not in word and word for word in vocabulary)
    words: set[str] = set()
    for example in expand_spec(spec, 10**6) + expand_negatives(spec, 10**6):
        words.update(example.text.lower().split())
    for slot_list in spec.slots.values():
        for value in slot_list.values:
            for synonym in value.synonyms:
                words.update(synonym.lower().split())
    assert set(vocabulary) == words


def test_korean_vocabulary_is_small() -> None:
    vocabulary = vosk_vocabulary(load_spec(ROOT / "examples/ko/smart-home.yaml"))
    assert len(vocabulary) < 60
    assert {"거실", "주방", "침실", "불", "켜", "꺼"} <= set(vocabulary)
