"""Tests for loading and validating intent specs, error messages word for word, and fuzzing."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from convert.spec import Action, SlotValue, SpecError, load_spec, number_words
from convert.templates import Template

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*/*.yaml"))
SPECS = Path(__file__).parent / "specs"

BASE = """\
name: test
language: en
slots:
  room:
    - kitchen
    - "living room | lounge -> living_room"
intents:
  LightOn:
    sentences:
      - "turn on [the] {room} light[s]"
    action:
      topic: "z2m/{room}_light/set"
      payload: {"state": "ON"}
"""


def write(tmp_path: Path, text: str | bytes, name: str = "spec.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    return info.value


# -- valid specs ---------------------------------------------------------------------------


def test_base_spec(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    spec = load_spec(path)
    assert spec.path == str(path)
    assert spec.name == "test"
    assert spec.language == "en"
    assert spec.version == "1"
    assert spec.sha256 == hashlib.sha256(BASE.encode()).hexdigest()
    assert list(spec.slots) == ["room"]
    assert spec.slots["room"].values == (
        SlotValue("kitchen", ("kitchen",)),
        SlotValue("living_room", ("living room", "lounge")),
    )
    (intent,) = spec.intents
    assert intent.name == "LightOn"
    assert intent.sentences == ("turn on [the] {room} light[s]",)
    assert isinstance(intent.templates[0], Template)
    assert intent.slots == ("room",)
    assert intent.required == ("room",)
    assert intent.actions == (Action("z2m/{room}_light/set", {"state": "ON"}, False),)
    assert spec.negatives == () and spec.negative_sentences == ()
    assert spec.intent("LightOn") is intent


def test_full_featured_spec(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
name: my-model_2
language: pt-BR
version: 2.1
slots:
  level:
    range: {from: 10, to: 30, step: 10}
  thing:
    - {in: [lamp, light], out: 7}
    - {in: bulb}
    - 5
  on:
    - on
    - "off | no"
intents:
  Set:
    sentences:
      - "set {thing} [to {level}] {on}"
      - "{thing} {level}"
    required: [level, level]
    actions:
      - topic: "a/{thing}/set"
        payload: {"v": "{level}", "text": "level {level}", "n": [1, 2.5, true, null], "on": on}
        retain: yes
      - topic: b
none:
  - "what is the {thing}"
  - hello
""",
    )
    spec = load_spec(path)
    assert spec.version == "2.1"
    assert spec.language == "pt-BR"
    assert spec.slots["level"].values == (
        SlotValue(10, ("10",)),
        SlotValue(20, ("20",)),
        SlotValue(30, ("30",)),
    )
    assert spec.slots["thing"].values == (
        SlotValue(7, ("lamp", "light")),
        SlotValue("bulb", ("bulb",)),
        SlotValue(5, ("5",)),
    )
    assert spec.slots["on"].values == (
        SlotValue("on", ("on",)),
        SlotValue("off", ("off", "no")),
    )
    intent = spec.intent("Set")
    assert intent.slots == ("level", "on", "thing")
    assert intent.required == ("level",)
    assert intent.actions == (
        Action(
            "a/{thing}/set",
            {"v": "{level}", "text": "level {level}", "n": [1, 2.5, True, None], "on": True},
            True,
        ),
        Action("b", None, False),
    )
    assert spec.negative_sentences == ("what is the {thing}", "hello")
    assert [str(t) for t in spec.negatives] == list(spec.negative_sentences)


def test_default_required_is_slots_in_every_sentence(tmp_path: Path) -> None:
    text = BASE.replace(
        '      - "turn on [the] {room} light[s]"\n',
        '      - "turn on [the] {room} light[s] [at {level}]"\n'
        '      - "(lights on | {level}) in the {room}"\n',
    ).replace("slots:\n", "slots:\n  level: [low, high]\n")
    spec = load_spec(write(tmp_path, text))
    assert spec.intents[0].slots == ("level", "room")
    assert spec.intents[0].required == ("room",)


def test_norway_problem_and_yaml_booleans_stay_text(tmp_path: Path) -> None:
    text = BASE.replace("language: en", "language: no").replace("  LightOn:", "  On:")
    spec = load_spec(write(tmp_path, text))
    assert spec.language == "no"
    assert spec.intents[0].name == "On"


def test_english_numbers_are_spoken_as_words(tmp_path: Path) -> None:
    text = BASE.replace("slots:\n", "slots:\n  pct:\n    range: {from: 95, to: 105, step: 5}\n")
    spec = load_spec(write(tmp_path, text))
    assert spec.slots["pct"].values == (
        SlotValue(95, ("95", "ninety five")),
        SlotValue(100, ("100", "one hundred")),
        SlotValue(105, ("105", "one hundred five", "one hundred and five")),
    )


def test_number_words() -> None:
    assert number_words(0) == ("zero",)
    assert number_words(21) == ("twenty one",)
    assert number_words(1234) == (
        "one thousand two hundred thirty four",
        "one thousand two hundred and thirty four",
    )
    assert number_words(2005) == ("two thousand five", "two thousand and five")
    assert number_words(-3) == ("minus three",)
    assert number_words(10**12) == ()


def test_spec_is_json_friendly(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, BASE))
    data = dataclasses.asdict(spec)
    data.pop("negatives")
    for intent in data["intents"]:
        intent.pop("templates")
    text = json.dumps(data, sort_keys=True)
    assert '"living_room"' in text


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.parent.name for p in EXAMPLES])
def test_examples_load(path: Path) -> None:
    spec = load_spec(path)
    assert spec.intents
    assert spec.negatives
    for intent in spec.intents:
        assert intent.actions, intent.name
        assert set(intent.required) <= set(intent.slots)


def test_english_example_contents() -> None:
    spec = load_spec(ROOT / "examples/en/smart-home.yaml")
    assert spec.name == "smart-home-en" and spec.language == "en"
    names = {intent.name for intent in spec.intents}
    assert {"LightOn", "LightOff", "LightDim", "TimerStart", "TimerCancel"} <= names
    assert len(names) >= 12
    assert len(spec.negatives) >= 40
    rooms = {value.value: value.synonyms for value in spec.slots["room"].values}
    assert rooms["living_room"] == ("living room", "lounge")
    assert SlotValue(50, ("50", "fifty")) in spec.slots["brightness"].values
    dim = spec.intent("LightDim")
    assert dim.required == ("brightness", "room")
    assert dim.actions[0].payload == {"state": "ON", "brightness_percent": "{brightness}"}


def test_korean_example_contents() -> None:
    spec = load_spec(ROOT / "examples/ko/smart-home.yaml")
    assert spec.language == "ko"
    assert 4 <= len(spec.intents) <= 6
    rooms = {value.value for value in spec.slots["room"].values}
    assert rooms == {"living_room", "kitchen", "bedroom"}


# -- errors --------------------------------------------------------------------------------

KNOWN_INTENT_KEYS = "(expected: sentences, required, action, actions)"


def replace(old: str, new: str) -> str:
    assert old in BASE
    return BASE.replace(old, new)


ERRORS = [
    # (spec text, line, problem)
    (
        replace("{room} light[s]", "{rom} light[s]"),
        10,
        "intent 'LightOn': unknown slot {rom} (known: room)",
    ),
    (
        replace("    sentences:", "    sentnces:"),
        9,
        f"unknown key 'sentnces' in intent 'LightOn' {KNOWN_INTENT_KEYS}",
    ),
    (
        BASE + '  LightOn:\n    sentences: ["on"]\n',
        14,
        "duplicate intent 'LightOn' (first defined on line 8)",
    ),
    (
        replace("intents:", "  room: [hall]\nintents:"),
        7,
        "duplicate slot list 'room' (first defined on line 4)",
    ),
    (
        replace("name: test\n", "name: test\nname: again\n"),
        2,
        "duplicate key 'name' at top level (first defined on line 1)",
    ),
    (
        replace("turn on [the]", "(turn||switch) on [the]"),
        10,
        (
            "intent 'LightOn': empty alternative at column 7 "
            'in "(turn||switch) on [the] {room} light[s]"'
        ),
    ),
    (
        replace("turn on [the]", "(turn on [the]"),
        10,
        "intent 'LightOn': unclosed '(' at column 1 in \"(turn on [the] {room} light[s]\"",
    ),
    (
        replace("turn on [the] {room} light[s]", "[the] [light]"),
        10,
        (
            "intent 'LightOn': template can expand to an empty sentence at column 1 "
            'in "[the] [light]"'
        ),
    ),
    (
        replace("turn on [the] {room} light[s]", "turn on {}"),
        10,
        "intent 'LightOn': empty slot name '{}' at column 9 in \"turn on {}\"",
    ),
    (
        replace('    - kitchen\n    - "living room | lounge -> living_room"\n', "    []\n"),
        4,
        "slot list 'room' is empty",
    ),
    (
        replace("  room:\n    - kitchen", "  room:\n    -\n    - kitchen"),
        5,
        ("value of slot 'room' must be a string, got nothing"),
    ),
    (
        replace("    action:", "    required: [room, level]\n    action:"),
        11,
        "intent 'LightOn': required slot 'level' is not used in any sentence",
    ),
    (
        replace("{room}_light/set", "{rom}_light/set"),
        12,
        "intent 'LightOn': action topic references unknown slot {rom} (intent slots: room)",
    ),
    (
        replace('{"state": "ON"}', '{"state": "ON", "where": ["{room}", "{floor}"]}'),
        13,
        "intent 'LightOn': action payload references unknown slot {floor} (intent slots: room)",
    ),
    (
        replace('      - "turn on [the] {room} light[s]"\n', "      []\n"),
        10,
        "intent 'LightOn' has no sentences",
    ),
    (
        replace('    sentences:\n      - "turn on [the] {room} light[s]"', '    sentences: "on"'),
        9,
        "sentences of intent 'LightOn' must be a list of strings, got a string",
    ),
    (
        replace('"turn on [the] {room} light[s]"', "{room}"),
        10,
        (
            "sentences of intent 'LightOn' must be a list of strings, got a mapping in it "
            "(quote strings that start with '{' or '[')"
        ),
    ),
    (
        replace('"turn on [the] {room} light[s]"', '""'),
        10,
        "sentences of intent 'LightOn' must not contain empty strings",
    ),
    (
        replace('    sentences:\n      - "turn on [the] {room} light[s]"\n', ""),
        8,
        "intent 'LightOn': missing required key 'sentences'",
    ),
    ("- a\n- b\n", 1, "the spec must be a mapping, got a list"),
    ("just text\n", 1, "the spec must be a mapping, got a string"),
    ("", 1, "spec must be a mapping, but the file is empty"),
    ("# only a comment\n", 1, "spec must be a mapping, but the file is empty"),
    ("name: test\n  language: en\n", 2, "invalid YAML: mapping values are not allowed here"),
    (
        "name: [test\n",
        2,
        (
            "invalid YAML: while parsing a flow sequence, expected ',' or ']', "
            "but got '<stream end>'"
        ),
    ),
    (
        "a: b\n---\nc: d\n",
        2,
        "invalid YAML: expected a single document in the stream, but found another document",
    ),
    (
        replace('"turn on [the] {room} light[s]"', "{room} lights on"),
        10,
        (
            "invalid YAML: while parsing a block collection, expected <block end>, but found "
            "'<scalar>' (quote strings that start with '{' or '[')"
        ),
    ),
    ("name: a\nb: *x\n", 2, "invalid YAML: found undefined alias 'x'"),
    (
        "name: a\nb: \x07\n",
        2,
        ("invalid YAML: unacceptable character #x0007 (special characters are not allowed)"),
    ),
    (replace("name: test\n", ""), 1, "missing required key 'name'"),
    (replace("language: en\n", ""), 1, "missing required key 'language'"),
    (BASE.split("intents:")[0], 1, "missing required key 'intents'"),
    (replace("name: test", "name: Test Model"), 1, "name must match [a-z0-9_-]+, got 'Test Model'"),
    (replace("name: test", "name:"), 1, "name must be a string, got nothing"),
    (replace("name: test", "name: [a]"), 1, "name must be a string, got a list"),
    (
        replace("language: en", "language: english!"),
        2,
        "language must be a language code like 'en' or 'pt-BR', got 'english!'",
    ),
    (
        replace("intents:", "intnets:"),
        7,
        (
            "unknown key 'intnets' at top level "
            "(expected: name, language, version, slots, intents, none)"
        ),
    ),
    (BASE.split("intents:")[0] + "intents: {}\n", 7, "intents must not be empty"),
    (BASE.split("intents:")[0] + "intents:\n", 7, "intents must not be empty"),
    (BASE.split("intents:")[0] + "intents: [a]\n", 7, "intents must be a mapping, got a list"),
    (
        replace("  LightOn:", "  1Light:"),
        8,
        "invalid intent name '1Light' (use letters, digits and '_', starting with a letter,"
        " at most 256)",
    ),
    (
        replace("  room:", "  my room:"),
        4,
        "invalid slot list name 'my room' (use letters, digits and '_', at most 256)",
    ),
    (
        replace("slots:\n", "slots:\n  ? [a]\n  : [b]\n"),
        4,
        "keys of slots must be strings, got a list",
    ),
    (
        replace("    action:", "    actions: []\n    action:"),
        11,
        "intent 'LightOn': use either 'action' or 'actions', not both",
    ),
    (
        replace("    action:", "    actions: {topic: a}\n    action_:"),
        12,
        "unknown key 'action_' in intent 'LightOn' " + KNOWN_INTENT_KEYS,
    ),
    (
        replace("    action:", "    actions: {topic: a}\n    x_action:").replace("x_action", "q"),
        12,
        "unknown key 'q' in intent 'LightOn' " + KNOWN_INTENT_KEYS,
    ),
    (
        replace("    action:", "    actions: topic\n    retired:"),
        12,
        "unknown key 'retired' in intent 'LightOn' " + KNOWN_INTENT_KEYS,
    ),
    (
        replace('      payload: {"state": "ON"}', "      retain: maybe"),
        13,
        "retain of intent 'LightOn' must be true or false",
    ),
    (
        replace('      payload: {"state": "ON"}', "      qos: 1"),
        13,
        "unknown key 'qos' in action of intent 'LightOn' (expected: topic, payload, retain)",
    ),
    (
        replace('      topic: "z2m/{room}_light/set"\n', ""),
        12,
        "action of intent 'LightOn' is missing 'topic'",
    ),
    (
        replace("z2m/{room}_light/set", "z2m/+/set"),
        12,
        "intent 'LightOn': action topic 'z2m/+/set' holds the MQTT wildcard '+'"
        " (not allowed in a published topic)",
    ),
    (
        replace('{"state": "ON"}', '{"state": "ON", "state": "OFF"}'),
        13,
        "duplicate key 'state' (first defined on line 13)",
    ),
    (
        replace('{"state": "ON"}', "{a: &p [1, *p]}"),
        13,
        "intent 'LightOn': action payload is nested too deeply (or recursive)",
    ),
    (
        replace('{"state": "ON"}', "{a: .nan}"),
        13,
        "intent 'LightOn': action payload numbers must be finite",
    ),
    (
        replace('{"state": "ON"}', "{a: !!int abc}"),
        13,
        "intent 'LightOn': invalid int 'abc' in action payload",
    ),
    (
        replace('{"state": "ON"}', "{a: !!binary aGk=}"),
        13,
        "intent 'LightOn': unsupported YAML tag 'tag:yaml.org,2002:binary' in action payload",
    ),
    (
        replace('{"state": "ON"}', "{<<: {a: 1}}"),
        13,
        "YAML merge keys ('<<') are not supported",
    ),
    (
        replace("    - kitchen", "    - kitchen | cook -> kitchen -> k"),
        5,
        "value of slot 'room' 'kitchen | cook -> kitchen -> k' has more than one '->'",
    ),
    (
        replace("    - kitchen", "    - kitchen ->"),
        5,
        "value of slot 'room' 'kitchen ->' has nothing after '->'",
    ),
    (
        replace("    - kitchen", "    - kitchen | | cook"),
        5,
        "value of slot 'room' 'kitchen | | cook' has an empty synonym",
    ),
    (
        replace("    - kitchen", "    - Lounge"),
        4,
        "slot list 'room': 'lounge' is listed twice (for 'Lounge' and 'living_room')",
    ),
    (
        replace("    - kitchen", "    - {in: [a], out: b, extra: c}"),
        5,
        "unknown key 'extra' in value of slot 'room' (expected: in, out)",
    ),
    (
        replace("    - kitchen", "    - {out: b}"),
        5,
        "value of slot 'room' is missing 'in'",
    ),
    (
        replace("    - kitchen", "    - {in: []}"),
        5,
        "'in' of value of slot 'room' must not be empty",
    ),
    (
        replace("    - kitchen", "    - [kitchen]"),
        5,
        "value of slot 'room' must be a string, got a list",
    ),
    (
        replace("  room:\n", "  n:\n    range: {from: 1, to: 10, step: 0}\n  room:\n"),
        5,
        "'step' in range of slot 'n' must be positive, got 0",
    ),
    (
        replace("  room:\n", "  n:\n    range: {from: 10, to: 1}\n  room:\n"),
        5,
        "range of slot 'n': 'from' (10) is greater than 'to' (1)",
    ),
    (
        replace("  room:\n", "  n:\n    range: {from: 0, to: 1000000000}\n  room:\n"),
        5,
        "range of slot 'n' has too many values (1000000001 > 10000)",
    ),
    (
        replace("  room:\n", "  n:\n    range: {from: 1, to: ten}\n  room:\n"),
        5,
        "'to' in range of slot 'n' must be an integer, got a string",
    ),
    (
        replace("  room:\n", "  n:\n    range: {from: 1}\n  room:\n"),
        5,
        "range of slot 'n' is missing 'to'",
    ),
    (
        replace("  room:\n", "  n:\n    range: {from: 1, to: 2, by: 1}\n  room:\n"),
        5,
        "unknown key 'by' in range of slot 'n' (expected: from, to, step)",
    ),
    (
        replace("  room:\n", "  n:\n    ragne: {}\n  room:\n"),
        5,
        "unknown key 'ragne' in slot 'n' (expected: range)",
    ),
    (
        replace("  room:\n", "  n: 5\n  room:\n"),
        4,
        "slot list 'n' must be a list of values or a mapping with 'range', got a number",
    ),
    (
        BASE + "none:\n  - hello\n  - what is the {weather}\n",
        16,
        "none: unknown slot {weather} (known: room)",
    ),
    (
        BASE + "none:\n  - (hello\n",
        15,
        "none: unclosed '(' at column 1 in \"(hello\"",
    ),
    (
        BASE + "none: hello\n",
        14,
        "none must be a list of strings, got a string",
    ),
    (
        replace(
            'slots:\n  room:\n    - kitchen\n    - "living room | lounge -> living_room"\n', ""
        ),
        6,
        "intent 'LightOn': unknown slot {room} (no slot lists are defined)",
    ),
]


@pytest.mark.parametrize(("text", "line", "problem"), ERRORS)
def test_errors(tmp_path: Path, text: str, line: int, problem: str) -> None:
    path = write(tmp_path, text)
    err = load_error(path)
    assert str(err) == f"{path}:{line}: {problem}"
    assert (err.path, err.line, err.problem) == (str(path), line, problem)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    assert str(load_error(path)) == f"{path}: cannot read: No such file or directory"


def test_directory(tmp_path: Path) -> None:
    assert str(load_error(tmp_path)) == f"{tmp_path}: cannot read: Is a directory"


def test_invalid_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, b"name: test\nlanguage: \xff\n")
    assert str(load_error(path)) == f"{path}:2: file is not valid UTF-8"


def test_utf8_bom_is_fine(tmp_path: Path) -> None:
    assert load_spec(write(tmp_path, b"\xef\xbb\xbf" + BASE.encode())).name == "test"


def test_path_given_as_string_is_kept(tmp_path: Path) -> None:
    path = write(tmp_path, replace("{room} light[s]", "{rom} light[s]"))
    err = load_error(str(path))  # type: ignore[arg-type]
    assert str(err).startswith(f"{path}:10: ")


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_bad_spec_fixtures(path: Path) -> None:
    """Each fixture's first line is ``# error: <line>: <problem>``."""
    header = path.read_text(encoding="utf-8").splitlines()[0]
    assert header.startswith("# error: ")
    expected = header.removeprefix("# error: ")
    assert str(load_error(path)) == f"{path}:{expected}"


# -- fuzzing -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz")


def check_only_spec_error(path: Path) -> None:
    try:
        load_spec(path)
    except SpecError as err:
        message = str(err)
        assert "\n" not in message
        assert message.startswith(f"{path}:")


YAMLISH = st.text(
    st.sampled_from(list("abn: -[]{}()|,'\"\n\t#&*!?%@`>~0123456789.{}")), max_size=80
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=120) | YAMLISH | st.binary(max_size=60))
def test_fuzz_garbage(fuzz_dir: Path, data: str | bytes) -> None:
    check_only_spec_error(write(fuzz_dir, data, "garbage.yaml"))


def spec_values() -> st.SearchStrategy[object]:
    keys = st.sampled_from(
        [
            "name",
            "language",
            "version",
            "slots",
            "intents",
            "none",
            "sentences",
            "required",
            "action",
            "actions",
            "topic",
            "payload",
            "retain",
            "range",
            "from",
            "to",
            "step",
            "in",
            "out",
            "room",
            "LightOn",
            "x",
        ]
    )
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-5, 200),
        st.sampled_from(
            ["test", "en", "{room}", "[a]", "(a|b)", "a -> b", "x | y", "{", "", "a/{room}/b"]
        ),
        st.text(max_size=8),
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(keys, children, max_size=5)
        ),
        max_leaves=25,
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec_values())
def test_fuzz_structured(fuzz_dir: Path, value: object) -> None:
    text = yaml.safe_dump(value, allow_unicode=True)
    check_only_spec_error(write(fuzz_dir, text, "structured.yaml"))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**32), st.integers(1, 6))
def test_fuzz_mutated_example(fuzz_dir: Path, seed: int, mutations: int) -> None:
    rng = random.Random(seed)
    lines = (ROOT / "examples/en/smart-home.yaml").read_text(encoding="utf-8").splitlines()
    for _ in range(mutations):
        i = rng.randrange(len(lines))
        kind = rng.randrange(5)
        if kind == 0:
            del lines[i]
        elif kind == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif kind == 2 and lines[i]:
            j = rng.randrange(len(lines[i]))
            lines[i] = lines[i][:j] + rng.choice("()[]{}|:-'\"# \t&*!") + lines[i][j + 1 :]
        elif kind == 3:
            lines[i] = " " + lines[i]
        else:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
    check_only_spec_error(write(fuzz_dir, "\n".join(lines) + "\n", "mutated.yaml"))


# -- topics and payloads: one rule with the runtime (agent.topics) ------------------------

TOPIC_ERRORS = [
    (
        replace("z2m/{room}_light/set", "z2m/{room}\\x7f/set"),
        12,
        "intent 'LightOn': action topic 'z2m/{room}\\u007f/set' holds the control character U+007F",
    ),
    (
        replace("z2m/{room}_light/set", "z2m/{room}\\0/set"),
        12,
        "intent 'LightOn': action topic 'z2m/{room}\\u0000/set' holds the control character U+0000",
    ),
    (
        replace("z2m/{room}_light/set", "$SYS/{room}"),
        12,
        "intent 'LightOn': action topic '$SYS/{room}' starts with '$' (reserved for the"
        " broker, like $SYS)",
    ),
    (
        replace("z2m/{room}_light/set", "x" * 65_536),
        12,
        f"intent 'LightOn': action topic '{'x' * 65_536}' is longer than 65535 bytes of UTF-8",
    ),
    (
        replace("    - kitchen\n", "    - kitchen\n    - first floor -> first/floor\n"),
        13,
        "intent 'LightOn': slot 'room' value 'first/floor' cannot be used in topic"
        " 'z2m/{room}_light/set': it holds '/', which would add a topic level",
    ),
    (
        replace("    - kitchen\n", "    - kitchen\n    - all rooms -> all+\n"),
        13,
        "intent 'LightOn': slot 'room' value 'all+' cannot be used in topic"
        " 'z2m/{room}_light/set': it holds the MQTT wildcard '+' (not allowed in a"
        " published topic)",
    ),
    (
        replace("z2m/{room}_light/set", "{room}/set").replace(
            "    - kitchen\n", "    - system -> $SYS\n"
        ),
        12,
        "intent 'LightOn': slot 'room' value '$SYS' cannot be used in topic '{room}/set':"
        " it makes a topic that starts with '$' (reserved for the broker, like $SYS)",
    ),
    (
        replace('payload: {"state": "ON"}', """payload: '{"state": "ON", "state": "OFF"}'"""),
        13,
        "intent 'LightOn': action payload is JSON text but not valid JSON (duplicate key 'state')",
    ),
    (
        replace('payload: {"state": "ON"}', "payload: '[1, 2]'"),
        13,
        "intent 'LightOn': action payload is JSON text but not a JSON object ({...})",
    ),
    (
        replace('payload: {"state": "ON"}', "payload: [1, 2]"),
        13,
        "intent 'LightOn': action payload must be a mapping (a JSON object) or text, got a"
        " list (quote it to send it as text)",
    ),
    (
        replace('payload: {"state": "ON"}', "payload: 7"),
        13,
        "intent 'LightOn': action payload must be a mapping (a JSON object) or text, got a"
        " number (quote it to send it as text)",
    ),
    (
        replace('payload: {"state": "ON"}', """payload: '{"room": "{room}"}'""").replace(
            "    - kitchen\n", """    - 'the den -> den "x"'\n"""
        ),
        13,
        "intent 'LightOn': slot 'room' value 'den \"x\"' makes the action payload not valid"
        " JSON (Expecting ',' delimiter); use a mapping payload instead",
    ),
    (
        replace('payload: {"state": "ON"}', """payload: '{"n": {room}}'"""),
        13,
        "intent 'LightOn': slot 'room' value 'kitchen' makes the action payload not valid"
        " JSON (Expecting value); use a mapping payload instead",
    ),
    (
        replace("    - kitchen\n", '    - "kitchen\\ud800"\n'),
        5,
        "the text holds a lone surrogate (U+D800), which is not UTF-8",
    ),
]


@pytest.mark.parametrize(("text", "line", "problem"), TOPIC_ERRORS)
def test_topics_and_payloads_that_break_the_rule_are_refused(
    tmp_path: Path, text: str, line: int, problem: str
) -> None:
    path = write(tmp_path, text)
    assert str(load_error(path)) == f"{path}:{line}: {problem}"


def test_topics_and_payloads_within_the_rule_load(tmp_path: Path) -> None:
    text = replace('payload: {"state": "ON"}', """payload: '{"state": "ON", "room": "{room}"}'""")
    text += """  Power:
    sentences:
      - "power on"
    actions:
      - topic: "cmnd/tasmota/POWER"
        payload: "ON"
      - topic: "home/état/€/{x}"
"""
    spec = load_spec(write(tmp_path, text.replace("{x}", "x")))
    assert [a.payload for a in spec.intent("Power").actions] == ["ON", None]
    assert spec.intent("LightOn").actions[0].payload == '{"state": "ON", "room": "{room}"}'
