"""Tests for the sentence template language: parsing, errors, counting, expansion, sampling."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from convert.templates import (
    Group,
    Sequence,
    SlotRef,
    Space,
    Template,
    TemplateError,
    Text,
    parse_template,
)


def sentences(template: Template) -> list[str]:
    """Expansions as strings, slot references written back as {name}."""
    return [
        "".join(p if isinstance(p, str) else f"{{{p.name}}}" for p in expansion)
        for expansion in template.expand()
    ]


def test_words_and_spaces_are_normalized() -> None:
    template = parse_template("  turn   on\tthe light ")
    assert sentences(template) == ["turn on the light"]
    assert template.text == "  turn   on\tthe light "
    assert str(template) == template.text


def test_alternatives_and_optional() -> None:
    template = parse_template("(turn | switch) on [the] light")
    assert sentences(template) == [
        "turn on the light",
        "turn on light",
        "switch on the light",
        "switch on light",
    ]


def test_optional_glued_to_word() -> None:
    assert sentences(parse_template("light[s]")) == ["lights", "light"]
    assert sentences(parse_template("(a|b)(c|d)")) == ["ac", "ad", "bc", "bd"]


def test_nested_groups() -> None:
    template = parse_template("(turn [the] light | switch) on")
    assert sentences(template) == ["turn the light on", "turn light on", "switch on"]


def test_top_level_alternatives() -> None:
    assert sentences(parse_template("lights on | turn on the lights")) == [
        "lights on",
        "turn on the lights",
    ]


def test_slot_references_stay_placeholders() -> None:
    template = parse_template("turn on [the] {room} light[s]")
    first = next(template.expand())
    assert first == ("turn on the ", SlotRef("room"), " lights")
    assert sentences(template)[-1] == "turn on {room} light"


def test_slot_at_edges_and_glued() -> None:
    template = parse_template("[the] {room} [light]")
    assert list(template.expand())[-1] == (SlotRef("room"),)
    assert next(parse_template("{a}{b}'s").expand()) == (SlotRef("a"), SlotRef("b"), "'s")
    assert next(parse_template("{ room }").expand()) == (SlotRef("room"),)


def test_ast_shape() -> None:
    template = parse_template("on [the] {room}")
    assert template.root == Group(
        (
            Sequence(
                (
                    Text("on"),
                    Space(),
                    Group((Sequence((Text("the"),)),), optional=True),
                    Space(),
                    SlotRef("room"),
                )
            ),
        )
    )


def test_slot_names() -> None:
    template = parse_template("set {room} [to {brightness}] (a | {x} | {room})")
    assert template.slot_names() == frozenset({"room", "brightness", "x"})
    assert template.mandatory_slot_names() == frozenset({"room"})
    assert parse_template("(a {x} | {x} b)").mandatory_slot_names() == frozenset({"x"})
    assert parse_template("hello").slot_names() == frozenset()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello", 1),
        ("light[s]", 2),
        ("(turn | switch) on [the] light[s]", 8),
        ("(a | b [c]) (d | e | f)", 9),
        ("[a] [a] b", 4),
        ("(a | (b | (c | d)))", 4),
        ("x | y [z]", 3),
    ],
)
def test_count_matches_enumeration(text: str, expected: int) -> None:
    template = parse_template(text)
    assert template.count() == expected
    assert len(list(template.expand())) == expected


def test_count_with_slot_sizes() -> None:
    template = parse_template("(turn | switch) on [the] {room} light[s] [to {level}]")
    sizes = {"room": 5, "level": 10}
    by_enumeration = 0
    for expansion in template.expand():
        combos = 1
        for piece in expansion:
            if isinstance(piece, SlotRef):
                combos *= sizes[piece.name]
        by_enumeration += combos
    assert template.count(sizes) == by_enumeration == 2 * 2 * 5 * 2 * 11
    assert template.count({"room": 5}) == 2 * 2 * 5 * 2 * 2


def test_count_of_exploding_template_without_enumerating() -> None:
    template = parse_template(" ".join(["(a | b | c | d | e | f | g | h | i | j)"] * 30))
    assert template.count() == 10**30


@pytest.mark.parametrize(
    ("text", "message", "column"),
    [
        ("", "empty template", 0),
        ("   ", "empty template", 0),
        ("(a||b)", "empty alternative", 3),
        ("(a|)", "empty alternative", 3),
        ("(|a)", "empty alternative", 1),
        ("(a| |b)", "empty alternative", 4),
        ("a | | b", "empty alternative", 4),
        ("a |", "empty alternative", 3),
        ("| a", "empty alternative", 0),
        ("x ()", "empty group '()'", 2),
        ("x [ ]", "empty group '[]'", 2),
        ("x {}", "empty slot name '{}'", 2),
        ("x { }", "empty slot name '{}'", 2),
        ("x {a b}", "invalid slot name 'a b'", 2),
        ("x {1a}", "invalid slot name '1a'", 2),
        ("x {room", "unclosed '{'", 2),
        ("x {ro(om}", "unclosed '{'", 2),
        ("turn (on", "unclosed '('", 5),
        ("turn [on", "unclosed '['", 5),
        ("turn on)", "unbalanced ')'", 7),
        ("turn on]", "unbalanced ']'", 7),
        ("turn on}", "unbalanced '}'", 7),
        ("(turn on]", "expected ')' to close '(' from column 1, found ']'", 8),
        ("a [b (c] d)", "expected ')' to close '(' from column 6, found ']'", 7),
        ("[the]", "template can expand to an empty sentence", 0),
        ("[the] [light]", "template can expand to an empty sentence", 0),
        ("light | [lamp]", "template can expand to an empty sentence", 0),
        ("([a] | [b])", "template can expand to an empty sentence", 0),
        ("(" * 40 + "a" + ")" * 40, "groups nested deeper than 32 levels", 32),
    ],
)
def test_errors(text: str, message: str, column: int) -> None:
    with pytest.raises(TemplateError) as info:
        parse_template(text)
    assert info.value.message == message
    assert info.value.column == column
    assert info.value.text == text
    assert str(info.value) == f"{message} at column {column + 1}"


def test_non_string_template() -> None:
    with pytest.raises(TemplateError, match="template must be a string"):
        parse_template(42)  # type: ignore[arg-type]


def test_optional_alternatives_are_fine() -> None:
    assert sentences(parse_template("a [b | c]")) == ["a b", "a c", "a"]
    assert sentences(parse_template("a (b | [c] d)")) == ["a b", "a c d", "a d"]


def test_sample_is_deterministic_per_seed() -> None:
    template = parse_template("(a | b | c) (d | e | f) [g | h] {x} (i | j | k | l)")
    draws = [template.sample(random.Random(7)) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]
    series_a = [template.sample(rng) for rng in [random.Random(1)] for _ in range(20)]
    series_b = [template.sample(rng) for rng in [random.Random(1)] for _ in range(20)]
    series_c = [template.sample(rng) for rng in [random.Random(2)] for _ in range(20)]
    assert series_a == series_b
    assert series_a != series_c


def test_sample_draws_expansions_and_reaches_all() -> None:
    template = parse_template("(turn | switch) on [the] light[s] | lights on")
    expansions = set(template.expand())
    rng = random.Random(0)
    seen = {template.sample(rng) for _ in range(400)}
    assert seen == expansions


def test_sample_is_roughly_uniform_over_sentences() -> None:
    # Alternative (b c d | e) has 3 * 1 + 1 = 4 sentences vs 1 for (a): ~80% should take it.
    template = parse_template("(a | (b | c | d) x | e)")
    rng = random.Random(3)
    draws = [template.sample(rng) for _ in range(2000)]
    share = sum(1 for d in draws if d != ("a",)) / len(draws)
    assert 0.74 < share < 0.86


def test_sample_weights_slot_sizes() -> None:
    template = parse_template("a | {big}")
    rng = random.Random(5)
    draws = [template.sample(rng, {"big": 99}) for _ in range(1000)]
    assert sum(1 for d in draws if d == ("a",)) < 40


def test_sample_of_exploding_template() -> None:
    template = parse_template(" ".join(["(a | b | c | d | e | f | g | h | i | j)"] * 30))
    rng = random.Random(11)
    expansion = template.sample(rng)
    assert len(expansion) == 1 and len(expansion[0].split()) == 30


TEMPLATE_CHARS = st.sampled_from(list("()[]{}| \tabx_1"))


@settings(max_examples=400, deadline=None)
@given(st.text(TEMPLATE_CHARS, max_size=24) | st.text(max_size=24))
def test_fuzz_only_template_errors(text: str) -> None:
    try:
        template = parse_template(text)
    except TemplateError as err:
        assert 0 <= err.column <= len(text)
        assert "\n" not in str(err)
        return
    expansions = list(template.expand())
    assert len(expansions) == template.count()
    for expansion in expansions:
        assert expansion, "no expansion may be empty"
        rendered = "".join(p if isinstance(p, str) else "X" for p in expansion)
        assert rendered == rendered.strip()
        assert "  " not in rendered
        for piece in expansion:
            assert piece != ""
    assert template.sample(random.Random(0)) in expansions
