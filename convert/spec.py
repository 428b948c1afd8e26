"""Load and validate an intent spec (the one YAML file a user writes) into frozen dataclasses.

Every problem becomes a :class:`SpecError` whose ``str()`` is one line,
``<path>:<line>: <problem>``, with the line taken from the YAML node that is wrong. The YAML is
composed into nodes (never constructed by PyYAML) so duplicate keys are caught, line marks are
kept, and plain scalars such as ``on``/``no`` stay the text the user wrote wherever a string is
expected.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from agent import topics
from agent.metadata import Action
from agent.slots import SlotValue
from convert.templates import Template, TemplateError, parse_template

__all__ = [
    "Action",
    "Intent",
    "SlotList",
    "SlotValue",
    "Spec",
    "SpecError",
    "load_spec",
    "number_words",
    "placeholders",
]

NAME_RE: Final = re.compile(r"[a-z0-9_-]+\Z")
LANGUAGE_RE: Final = re.compile(r"[A-Za-z]{2,3}(?:[-_][A-Za-z0-9]{1,8})*\Z")
INTENT_RE: Final = topics.INTENT_NAME_RE
MAX_RANGE_VALUES: Final = 10_000
MAX_PAYLOAD_NODES: Final = 10_000
MAX_PAYLOAD_DEPTH: Final = 64
MAX_SPEC_BYTES: Final = 16 << 20
"""Largest spec file read: a path such as /dev/zero must not fill the memory."""

TOP_KEYS: Final = ("name", "language", "version", "slots", "intents", "none")
INTENT_KEYS: Final = ("sentences", "required", "action", "actions")
ACTION_KEYS: Final = ("topic", "payload", "retain")
SLOT_KEYS: Final = ("range",)
RANGE_KEYS: Final = ("from", "to", "step")
VALUE_KEYS: Final = ("in", "out")

_TAG = "tag:yaml.org,2002:"
_NOT_TEXT: Final = ("int", "float", "bool")
"""Scalar payloads refused at the top level: a payload is an object, text or nothing."""
_UNQUOTED_FLOW_RE: Final = re.compile(
    r"\s*(?:-\s+|[^\s\"'{\[][^:]*:\s+)?[\[{][^\]}]*[\]}]\s*[^\s#,]"
)
"""A line whose value starts with a flow collection followed by more text, like
``- {room} lights on``: the user meant a string and forgot the quotes."""


class SpecError(Exception):
    """An invalid spec; ``str()`` is ``<path>:<line>: <problem>`` (or ``<path>: <problem>``
    when no line applies, e.g. an unreadable file)."""

    def __init__(self, path: str, line: int | None, problem: str) -> None:
        super().__init__(path, line, problem)
        self.path = path
        self.line = line
        self.problem = " ".join(problem.split("\n"))

    def __str__(self) -> str:
        if self.line is None:
            return topics.printable(f"{self.path}: {self.problem}")
        return topics.printable(f"{self.path}:{self.line}: {self.problem}")


@dataclass(frozen=True)
class SlotList:
    """A named list of slot values, referenced from templates as ``{name}``."""

    name: str
    values: tuple[SlotValue, ...]


@dataclass(frozen=True)
class Intent:
    """An intent: its sentence templates, the slots they reference, and its actions."""

    name: str
    sentences: tuple[str, ...]
    templates: tuple[Template, ...]
    slots: tuple[str, ...]
    required: tuple[str, ...]
    actions: tuple[Action, ...]


@dataclass(frozen=True)
class Spec:
    """A validated spec file; ``sha256`` is of the file bytes, to tie a model to its spec."""

    path: str
    name: str
    language: str
    version: str
    slots: Mapping[str, SlotList]
    intents: tuple[Intent, ...]
    negatives: tuple[Template, ...] = ()
    negative_sentences: tuple[str, ...] = ()
    sha256: str = field(default="")

    def intent(self, name: str) -> Intent:
        """The intent called ``name`` (KeyError if none)."""
        for intent in self.intents:
            if intent.name == name:
                return intent
        raise KeyError(name)


def placeholders(text: str) -> list[str]:
    """The ``{slot}`` names in an action topic or payload string, in order."""
    return topics.PLACEHOLDER_RE.findall(text)


def load_spec(path: str | Path) -> Spec:
    """Read, parse and validate the spec at ``path``; raise :class:`SpecError` on any problem."""
    name = str(path)
    try:
        with Path(path).open("rb") as file:
            data = file.read(MAX_SPEC_BYTES + 1)
    except OSError as err:
        raise SpecError(name, None, f"cannot read: {err.strerror or err}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(name, None, f"too large for a spec (over {MAX_SPEC_BYTES >> 20} MiB)")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise SpecError(name, line, "file is not valid UTF-8") from None
    root = _compose(name, text)
    _refuse_surrogates(name, root)
    return _Builder(name).spec(root, hashlib.sha256(data).hexdigest())


def _compose(path: str, text: str) -> Node | None:
    """Parse YAML text into a node tree, turning every YAML failure into a SpecError."""
    try:
        return yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.reader.ReaderError as err:
        char = err.character
        code = ord(char) if isinstance(char, str) else char if isinstance(char, int) else 0
        line = text[: err.position].count("\n") + 1
        raise SpecError(
            path, line, f"invalid YAML: unacceptable character #x{code:04x} ({err.reason})"
        ) from None
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        line = mark.line + 1 if mark is not None else None
        problem = ", ".join(part for part in (err.context, err.problem) if part) or "syntax error"
        lines = text.splitlines()
        if line is not None and 0 < line <= len(lines) and _UNQUOTED_FLOW_RE.match(lines[line - 1]):
            problem += " (quote strings that start with '{' or '[')"
        raise SpecError(path, line, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as err:
        raise SpecError(path, None, f"invalid YAML: {err}") from None
    except RecursionError:
        raise SpecError(path, None, "invalid YAML: nested too deeply") from None


def _refuse_surrogates(path: str, root: Node | None) -> None:
    """Refuse a lone surrogate anywhere (a YAML escape such as ``"\\ud800"`` makes one): it
    cannot be written as UTF-8, so a model holding one would fail at build's end or at the
    first command that touches it."""
    seen: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:  # aliases share nodes; a recursive alias would loop
            continue
        seen.add(id(node))
        if isinstance(node, ScalarNode):
            problem = topics.text_problem(str(node.value), MAX_SPEC_BYTES)
            if problem is not None and "surrogate" in problem:
                raise SpecError(path, _line(node), f"the text {problem}")
        elif isinstance(node, MappingNode):
            stack.extend(item for pair in node.value for item in pair)
        elif isinstance(node, SequenceNode):
            stack.extend(node.value)


def _line(node: Node) -> int:
    return int(node.start_mark.line) + 1


def _describe(node: Node) -> str:
    """A short human name for what a node is, for 'expected X, got Y' messages."""
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    kinds = {"null": "nothing", "bool": "a boolean", "int": "a number", "float": "a number"}
    tag = str(node.tag)
    if tag.startswith(_TAG) and tag[len(_TAG) :] in kinds:
        return kinds[tag[len(_TAG) :]]
    return "a string"


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _TAG + "null"


def _join(names: Iterator[str] | list[str] | tuple[str, ...]) -> str:
    return ", ".join(names)


class _Builder:
    """Walks the composed node tree of one file and builds the Spec, failing on the first
    problem with the line of the offending node."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.constructor = SafeConstructor()

    def fail(self, where: Node | int | None, problem: str) -> NoReturn:
        line = _line(where) if isinstance(where, Node) else where
        raise SpecError(self.path, line, problem)

    # -- generic node helpers -------------------------------------------------------------

    def mapping(
        self, node: Node, what: str, dup: str = "key", where: str = ""
    ) -> list[tuple[str, Node, Node]]:
        """Items of a mapping node as (key text, key node, value node); keys must be scalars
        and unique (PyYAML would silently keep the last duplicate)."""
        if not isinstance(node, MappingNode):
            self.fail(node, f"{what} must be a mapping, got {_describe(node)}")
        items: list[tuple[str, Node, Node]] = []
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _TAG + "merge":
                self.fail(key_node, "YAML merge keys ('<<') are not supported")
            if not isinstance(key_node, ScalarNode):
                self.fail(key_node, f"keys of {what} must be strings, got {_describe(key_node)}")
            key = str(key_node.value)
            if key in seen:
                self.fail(
                    key_node,
                    f"duplicate {dup} '{key}'{where} (first defined on line {seen[key]})",
                )
            seen[key] = _line(key_node)
            items.append((key, key_node, value_node))
        return items

    def check_keys(
        self, items: list[tuple[str, Node, Node]], allowed: tuple[str, ...], where: str
    ) -> dict[str, Node]:
        """Reject unknown keys; return the values by key."""
        for key, key_node, _ in items:
            if key not in allowed:
                self.fail(key_node, f"unknown key '{key}' {where} (expected: {_join(allowed)})")
        return {key: value for key, _, value in items}

    def string(self, node: Node, what: str) -> str:
        """A non-empty string scalar, as written (so ``no`` stays ``"no"``, not ``False``)."""
        if not isinstance(node, ScalarNode) or _is_null(node):
            self.fail(node, f"{what} must be a string, got {_describe(node)}")
        value = str(node.value)
        if not value.strip():
            self.fail(node, f"{what} must not be empty")
        return value

    def integer(self, node: Node, what: str) -> int:
        """An integer scalar (YAML int syntax; booleans and floats are rejected)."""
        if not isinstance(node, ScalarNode) or node.tag != _TAG + "int":
            self.fail(node, f"{what} must be an integer, got {_describe(node)}")
        try:
            return int(self.constructor.construct_yaml_int(node))
        except (ValueError, TypeError, KeyError, yaml.YAMLError):
            self.fail(node, f"{what} must be an integer, got '{node.value}'")

    def string_list(self, node: Node, what: str) -> list[tuple[str, Node]]:
        """A list of strings (``null`` counts as empty)."""
        if _is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            self.fail(node, f"{what} must be a list of strings, got {_describe(node)}")
        out: list[tuple[str, Node]] = []
        for item in node.value:
            if not isinstance(item, ScalarNode) or _is_null(item):
                hint = ""
                if isinstance(item, (MappingNode, SequenceNode)):
                    hint = " (quote strings that start with '{' or '[')"
                self.fail(
                    item, f"{what} must be a list of strings, got {_describe(item)} in it{hint}"
                )
            if not str(item.value).strip():
                self.fail(item, f"{what} must not contain empty strings")
            out.append((str(item.value), item))
        return out

    # -- the spec -------------------------------------------------------------------------

    def spec(self, root: Node | None, sha256: str) -> Spec:
        if root is None:
            self.fail(1, "spec must be a mapping, but the file is empty")
        items = self.mapping(root, "the spec", where=" at top level")
        keys = self.check_keys(items, TOP_KEYS, "at top level")
        for required in ("name", "language", "intents"):
            if required not in keys:
                self.fail(root, f"missing required key '{required}'")
        name = self.string(keys["name"], "name")
        if not NAME_RE.match(name):
            self.fail(keys["name"], f"name must match [a-z0-9_-]+, got '{name}'")
        language = self.string(keys["language"], "language")
        if not LANGUAGE_RE.match(language):
            self.fail(
                keys["language"],
                f"language must be a language code like 'en' or 'pt-BR', got '{language}'",
            )
        version = "1"
        if "version" in keys:
            version = self.string(keys["version"], "version")
        slots = self.slot_lists(keys.get("slots"), language)
        intents = self.intents(keys["intents"], slots)
        negative_sentences: list[str] = []
        negatives: list[Template] = []
        if "none" in keys:
            for text, node in self.string_list(keys["none"], "none"):
                negatives.append(self.template(text, node, "none", slots))
                negative_sentences.append(text)
        return Spec(
            path=self.path,
            name=name,
            language=language,
            version=version,
            slots=slots,
            intents=intents,
            negatives=tuple(negatives),
            negative_sentences=tuple(negative_sentences),
            sha256=sha256,
        )

    # -- slots ----------------------------------------------------------------------------

    def slot_lists(self, node: Node | None, language: str) -> dict[str, SlotList]:
        if node is None or _is_null(node):
            return {}
        out: dict[str, SlotList] = {}
        for name, key_node, value_node in self.mapping(node, "slots", dup="slot list"):
            if not topics.SLOT_NAME_RE.match(name):
                self.fail(
                    key_node,
                    f"invalid slot list name '{name}' (use letters, digits and '_', at most"
                    f" {topics.MAX_NAME_CHARS})",
                )
            values = self.slot_values(name, key_node, value_node, language)
            out[name] = SlotList(name, values)
        return out

    def slot_values(
        self, name: str, key_node: Node, node: Node, language: str
    ) -> tuple[SlotValue, ...]:
        if _is_null(node) or (isinstance(node, SequenceNode) and not node.value):
            self.fail(key_node, f"slot list '{name}' is empty")
        if isinstance(node, MappingNode):
            keys = self.check_keys(
                self.mapping(node, f"slot list '{name}'"), SLOT_KEYS, f"in slot '{name}'"
            )
            if "range" not in keys:
                self.fail(node, f"slot list '{name}' must be a list of values or have a 'range'")
            values = self.slot_range(name, keys["range"], language)
        elif isinstance(node, SequenceNode):
            values = tuple(self.slot_value(name, item, language) for item in node.value)
        else:
            self.fail(
                node,
                f"slot list '{name}' must be a list of values or a mapping with 'range', "
                f"got {_describe(node)}",
            )
        seen: dict[str, SlotValue] = {}
        for value in values:
            for synonym in value.synonyms:
                key = synonym.casefold()
                if key in seen:
                    first = seen[key].value
                    self.fail(
                        key_node,
                        f"slot list '{name}': '{synonym}' is listed twice "
                        f"(for {first!r} and {value.value!r})",
                    )
                seen[key] = value
        return values

    def slot_range(self, name: str, node: Node, language: str) -> tuple[SlotValue, ...]:
        where = f"in range of slot '{name}'"
        keys = self.check_keys(self.mapping(node, f"range of slot '{name}'"), RANGE_KEYS, where)
        for key in ("from", "to"):
            if key not in keys:
                self.fail(node, f"range of slot '{name}' is missing '{key}'")
        start = self.integer(keys["from"], f"'from' {where}")
        stop = self.integer(keys["to"], f"'to' {where}")
        step = self.integer(keys["step"], f"'step' {where}") if "step" in keys else 1
        if step <= 0:
            self.fail(keys["step"], f"'step' {where} must be positive, got {step}")
        if start > stop:
            self.fail(
                node, f"range of slot '{name}': 'from' ({start}) is greater than 'to' ({stop})"
            )
        size = (stop - start) // step + 1
        if size > MAX_RANGE_VALUES:
            self.fail(
                node,
                f"range of slot '{name}' has too many values ({size} > {MAX_RANGE_VALUES})",
            )
        return tuple(
            SlotValue(n, _number_synonyms(n, language)) for n in range(start, stop + 1, step)
        )

    def slot_value(self, name: str, node: Node, language: str) -> SlotValue:
        what = f"value of slot '{name}'"
        if isinstance(node, MappingNode):
            keys = self.check_keys(self.mapping(node, what), VALUE_KEYS, f"in {what}")
            if "in" not in keys:
                self.fail(node, f"{what} is missing 'in'")
            if isinstance(keys["in"], ScalarNode) and not _is_null(keys["in"]):
                phrases = [self.phrase(keys["in"], f"'in' of {what}")]
            else:
                items = self.string_list(keys["in"], f"'in' of {what}")
                if not items:
                    self.fail(keys["in"], f"'in' of {what} must not be empty")
                phrases = [_squash(text) for text, _ in items]
            canonical: str | int = phrases[0]
            if "out" in keys:
                canonical = self.canonical(keys["out"], f"'out' of {what}")
            return SlotValue(canonical, _unique(phrases))
        if isinstance(node, ScalarNode) and node.tag == _TAG + "int":
            number = self.integer(node, what)
            return SlotValue(number, _number_synonyms(number, language))
        text = self.string(node, what)
        if text.count("->") > 1:
            self.fail(node, f"{what} '{text}' has more than one '->'")
        left, arrow, right = text.partition("->")
        canonical_text = _squash(right)
        if arrow and not canonical_text:
            self.fail(node, f"{what} '{text}' has nothing after '->'")
        synonyms = [_squash(part) for part in left.split("|")]
        if not all(synonyms):
            self.fail(node, f"{what} '{text}' has an empty synonym")
        return SlotValue(canonical_text or synonyms[0], _unique(synonyms))

    def phrase(self, node: Node, what: str) -> str:
        return _squash(self.string(node, what))

    def canonical(self, node: Node, what: str) -> str | int:
        if isinstance(node, ScalarNode) and node.tag == _TAG + "int":
            return self.integer(node, what)
        return _squash(self.string(node, what))

    # -- intents --------------------------------------------------------------------------

    def intents(self, node: Node, slots: Mapping[str, SlotList]) -> tuple[Intent, ...]:
        if _is_null(node) or (isinstance(node, MappingNode) and not node.value):
            self.fail(node, "intents must not be empty")
        out: list[Intent] = []
        for name, key_node, value_node in self.mapping(node, "intents", dup="intent"):
            if not INTENT_RE.match(name):
                self.fail(
                    key_node,
                    f"invalid intent name '{name}' (use letters, digits and '_', "
                    f"starting with a letter, at most {topics.MAX_NAME_CHARS})",
                )
            out.append(self.intent(name, key_node, value_node, slots))
        return tuple(out)

    def intent(
        self, name: str, key_node: Node, node: Node, slots: Mapping[str, SlotList]
    ) -> Intent:
        label = f"intent '{name}'"
        items = self.mapping(node, label) if not _is_null(node) else []
        keys = self.check_keys(items, INTENT_KEYS, f"in {label}")
        if "sentences" not in keys:
            self.fail(key_node, f"{label}: missing required key 'sentences'")
        sentence_items = self.string_list(keys["sentences"], f"sentences of {label}")
        if not sentence_items:
            self.fail(keys["sentences"], f"{label} has no sentences")
        templates = [self.template(text, item, label, slots) for text, item in sentence_items]
        referenced = sorted(frozenset().union(*(t.slot_names() for t in templates)))
        if "required" in keys:
            required_set: set[str] = set()
            for slot, item in self.string_list(keys["required"], f"required of {label}"):
                if slot not in referenced:
                    self.fail(item, f"{label}: required slot '{slot}' is not used in any sentence")
                required_set.add(slot)
            required = tuple(sorted(required_set))
        else:
            always = frozenset.intersection(*(t.mandatory_slot_names() for t in templates))
            required = tuple(sorted(always))
        actions = self.actions(label, keys, referenced, slots)
        return Intent(
            name=name,
            sentences=tuple(text for text, _ in sentence_items),
            templates=tuple(templates),
            slots=tuple(referenced),
            required=required,
            actions=actions,
        )

    def template(
        self, text: str, node: Node, label: str, slots: Mapping[str, SlotList]
    ) -> Template:
        try:
            template = parse_template(text)
        except TemplateError as err:
            self.fail(node, f'{label}: {err} in "{text}"')
        for slot in sorted(template.slot_names()):
            if slot not in slots:
                known = f"known: {_join(sorted(slots))}" if slots else "no slot lists are defined"
                self.fail(node, f"{label}: unknown slot {{{slot}}} ({known})")
        return template

    # -- actions --------------------------------------------------------------------------

    def actions(
        self,
        label: str,
        keys: Mapping[str, Node],
        slots: list[str],
        lists: Mapping[str, SlotList],
    ) -> tuple[Action, ...]:
        if "action" in keys and "actions" in keys:
            self.fail(keys["actions"], f"{label}: use either 'action' or 'actions', not both")
        if "action" in keys:
            return (self.action(keys["action"], label, slots, lists),)
        if "actions" not in keys or _is_null(keys["actions"]):
            return ()
        node = keys["actions"]
        if not isinstance(node, SequenceNode):
            self.fail(node, f"actions of {label} must be a list, got {_describe(node)}")
        return tuple(self.action(item, label, slots, lists) for item in node.value)

    def action(
        self, node: Node, label: str, slots: list[str], lists: Mapping[str, SlotList]
    ) -> Action:
        where = f"action of {label}"
        keys = self.check_keys(self.mapping(node, where), ACTION_KEYS, f"in {where}")
        if "topic" not in keys:
            self.fail(node, f"{where} is missing 'topic'")
        topic = self.string(keys["topic"], f"topic of {label}")
        problem = topics.topic_problem(topic)
        if problem is not None:
            self.fail(keys["topic"], f"{label}: action topic '{topic}' {problem}")
        self.check_placeholders(topic, keys["topic"], label, "topic", slots)
        self.check_topic_values(topic, keys["topic"], label, lists)
        payload: object = None
        if "payload" in keys:
            payload = self.payload(keys["payload"], label, slots, lists)
        retain = False
        if "retain" in keys:
            retain_node = keys["retain"]
            if not isinstance(retain_node, ScalarNode) or retain_node.tag != _TAG + "bool":
                self.fail(retain_node, f"retain of {label} must be true or false")
            retain = bool(self.constructor.construct_yaml_bool(retain_node))
        return Action(topic, payload, retain)

    def check_topic_values(
        self, topic: str, node: Node, label: str, lists: Mapping[str, SlotList]
    ) -> None:
        """Refuse a slot value that would break the topic it fills (``first/floor`` in
        ``home/{room}/set`` adds a level): found here, not skipped at every command."""
        for slot in dict.fromkeys(placeholders(topic)):
            for value in lists[slot].values:
                text = str(value.value)
                problem = topics.filled_topic_problem(topic, slot, text)
                if problem is not None:
                    self.fail(
                        node,
                        f"{label}: slot '{slot}' value '{text}' cannot be used in topic"
                        f" '{topic}': it {problem}",
                    )

    def payload(
        self, node: Node, label: str, slots: list[str], lists: Mapping[str, SlotList]
    ) -> object:
        """An action's payload: a mapping (a JSON object), text, or nothing (an empty
        message). Text that starts like JSON must be one JSON object with unique keys:
        ``'{"state": "ON", "state": "OFF"}'`` means a different thing to each consumer."""
        if isinstance(node, SequenceNode) or (
            isinstance(node, ScalarNode) and str(node.tag) in (_TAG + t for t in _NOT_TEXT)
        ):
            self.fail(
                node,
                f"{label}: action payload must be a mapping (a JSON object) or text,"
                f" got {_describe(node)} (quote it to send it as text)",
            )
        payload = self.json_value(node, label, slots, set(), [0])
        if isinstance(payload, str):
            self.check_json_text(payload, node, label, lists)
        return payload

    def check_json_text(
        self, text: str, node: Node, label: str, lists: Mapping[str, SlotList]
    ) -> None:
        """Text that starts like JSON (``{`` or ``[``) must be one JSON object with unique
        keys, filled with each value of each slot it uses: the runtime fills it as text."""
        names = list(dict.fromkeys(placeholders(text)))
        # Each {slot} as a number first: in quotes or not, the text parses when the template does.
        if not topics.PLACEHOLDER_RE.sub("0", text).strip().startswith(("{", "[")):
            return  # plain text, such as Tasmota's ON
        fillings: list[tuple[str, str | int]] = [("", 0)]
        fillings += [(slot, value.value) for slot in names for value in lists[slot].values]
        for slot, value in fillings:
            parts = topics.PLACEHOLDER_RE.split(text)  # text, slot name, text, slot name, ...
            filled = "".join(
                part if i % 2 == 0 else str(value) if part == slot else "0"
                for i, part in enumerate(parts)
            )
            problem = _json_object_problem(filled)
            if problem is None:
                continue
            if slot:
                self.fail(
                    node,
                    f"{label}: slot '{slot}' value '{value}' makes the action payload"
                    f" {problem}; use a mapping payload instead",
                )
            self.fail(node, f"{label}: action payload is JSON text but {problem}")

    def check_placeholders(
        self, text: str, node: Node, label: str, part: str, slots: list[str]
    ) -> None:
        for slot in placeholders(text):
            if slot not in slots:
                have = f"intent slots: {_join(slots)}" if slots else "the intent has no slots"
                self.fail(
                    node, f"{label}: action {part} references unknown slot {{{slot}}} ({have})"
                )

    def json_value(
        self, node: Node, label: str, slots: list[str], active: set[int], budget: list[int]
    ) -> object:
        """Convert a payload node to a JSON value, checking ``{slot}`` references; guards
        against recursive aliases and alias bombs."""
        budget[0] += 1
        if budget[0] > MAX_PAYLOAD_NODES:
            self.fail(node, f"{label}: action payload is too large")
        if id(node) in active or len(active) >= MAX_PAYLOAD_DEPTH:
            self.fail(node, f"{label}: action payload is nested too deeply (or recursive)")
        if isinstance(node, MappingNode):
            active.add(id(node))
            result = {
                key: self.json_value(value, label, slots, active, budget)
                for key, _, value in self.mapping(node, f"payload of {label}")
            }
            active.discard(id(node))
            return result
        if isinstance(node, SequenceNode):
            active.add(id(node))
            items = [self.json_value(item, label, slots, active, budget) for item in node.value]
            active.discard(id(node))
            return items
        return self.json_scalar(node, label, slots)

    def json_scalar(self, node: Node, label: str, slots: list[str]) -> object:
        tag = str(node.tag)
        kind = tag.removeprefix(_TAG)
        try:
            if kind == "null":
                return None
            if kind == "bool":
                return bool(self.constructor.construct_yaml_bool(node))
            if kind == "int":
                return int(self.constructor.construct_yaml_int(node))
            if kind == "float":
                number = float(self.constructor.construct_yaml_float(node))
                if not math.isfinite(number):
                    self.fail(node, f"{label}: action payload numbers must be finite")
                return number
        except (ValueError, TypeError, KeyError, yaml.YAMLError):
            self.fail(node, f"{label}: invalid {kind} '{node.value}' in action payload")
        if kind not in ("str", "!", "timestamp"):
            self.fail(node, f"{label}: unsupported YAML tag '{tag}' in action payload")
        text = str(node.value)
        self.check_placeholders(text, node, label, "payload", slots)
        return text


def _json_object_problem(text: str) -> str | None:
    """Why ``text`` is not one JSON object with unique keys (None when it is)."""

    def unique(pairs: list[tuple[str, object]]) -> dict[str, object]:
        keys = [key for key, _ in pairs]
        for key in keys:
            if keys.count(key) > 1:
                raise ValueError(f"duplicate key '{key}'")
        return dict(pairs)

    try:
        document = json.loads(text, object_pairs_hook=unique)
    except RecursionError:
        return "not valid JSON (nested too deeply)"
    except ValueError as err:
        return f"not valid JSON ({getattr(err, 'msg', None) or err})"
    if not isinstance(document, dict):
        return "not a JSON object ({...})"
    return None


def _squash(text: str) -> str:
    """Collapse whitespace runs to one space and strip."""
    return " ".join(text.split())


def _unique(items: list[str]) -> tuple[str, ...]:
    """Items without repeats, first occurrence order kept."""
    return tuple(dict.fromkeys(items))


def _number_synonyms(number: int, language: str) -> tuple[str, ...]:
    """Ways to say a number: digits, plus English words for English specs."""
    if language.lower().replace("_", "-").split("-")[0] != "en":
        return (str(number),)
    return _unique([str(number), *number_words(number)])


_ONES: Final = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
_TENS: Final = (
    "",
    "",
    "twenty",
    "thirty",
    "forty",
    "fifty",
    "sixty",
    "seventy",
    "eighty",
    "ninety",
)
_SCALES: Final = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"))


def number_words(number: int) -> tuple[str, ...]:
    """English words for an integer, as speech recognizers write them ("twenty one"), with a
    British "and" variant when it differs ("one hundred and five"); empty beyond 10**12."""
    if abs(number) >= 10**12:
        return ()
    return _unique([_words(number, False), _words(number, True)])


def _words(number: int, use_and: bool) -> str:
    if number < 0:
        return "minus " + _words(-number, use_and)
    if number < 20:
        return _ONES[number]
    if number < 100:
        tens, ones = divmod(number, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if number < 1000:
        hundreds, rest = divmod(number, 100)
        text = f"{_ONES[hundreds]} hundred"
        if rest:
            text += (" and " if use_and else " ") + _words(rest, use_and)
        return text
    for scale, word in _SCALES:
        if number >= scale:
            high, rest = divmod(number, scale)
            text = f"{_words(high, use_and)} {word}"
            if rest:
                text += (" and " if use_and and rest < 100 else " ") + _words(rest, use_and)
            return text
    raise AssertionError("unreachable")
