"""Sentence template language (hassil-like): parse a template into a small AST and expand it.

Syntax: words separated by whitespace; alternatives ``(turn | switch)``; optional parts ``[the]``
(the only way to write an empty alternative: ``(the|)`` is an error); nesting
``(turn [the] light | switch)``; slot references ``{room}``; alternatives at the top level
``lights on | turn on the lights``. Groups glued to text form one word: ``light[s]`` expands to
``light`` and ``lights``. There are no escapes: the characters ``()[]{}|`` are always syntax.

An expansion is a tuple of pieces: literal text (``str``, single-spaced, no leading/trailing
space overall) and :class:`SlotRef` placeholders, so the caller can substitute slot values and
record their character spans.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Final

from agent.topics import SLOT_NAME_RE

__all__ = [
    "Expansion",
    "Group",
    "Node",
    "Piece",
    "Sequence",
    "SlotRef",
    "Space",
    "Template",
    "TemplateError",
    "Text",
    "normalize",
    "parse_template",
]

MAX_DEPTH: Final = 32
"""Deepest allowed group nesting; deeper templates are rejected instead of exhausting the stack."""

_SPECIAL: Final = frozenset("()[]{}|")
_CLOSERS: Final = {"(": ")", "[": "]"}


class TemplateError(ValueError):
    """A template does not parse; ``column`` is the 0-based offset of the problem in ``text``.

    ``str()`` gives the message and the 1-based column, as editors count.
    """

    def __init__(self, message: str, column: int, text: str = "") -> None:
        super().__init__(message, column, text)
        self.message = message
        self.column = column
        self.text = text

    def __str__(self) -> str:
        return f"{self.message} at column {self.column + 1}"


@dataclass(frozen=True)
class Text:
    """Literal characters without whitespace (part of a word, or a whole word)."""

    text: str


@dataclass(frozen=True)
class Space:
    """A word boundary (any run of whitespace in the template)."""


@dataclass(frozen=True)
class SlotRef:
    """A ``{name}`` reference: a placeholder for one value of the slot list ``name``."""

    name: str


@dataclass(frozen=True)
class Sequence:
    """Nodes that follow each other; nodes not separated by :class:`Space` are glued."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Group:
    """Alternatives ``(a | b)``; ``optional`` adds the empty alternative, as in ``[a]``."""

    alternatives: tuple[Sequence, ...]
    optional: bool = False


Node = Text | Space | SlotRef | Group
Piece = str | SlotRef
Expansion = tuple[Piece, ...]


@dataclass(frozen=True)
class Template:
    """A parsed sentence template: the source ``text`` and its AST ``root``."""

    text: str
    root: Group

    def __str__(self) -> str:
        return self.text

    def slot_names(self) -> frozenset[str]:
        """Names of all slot lists referenced anywhere in the template."""
        return frozenset(_slot_names(self.root))

    def mandatory_slot_names(self) -> frozenset[str]:
        """Slots present in every expansion (referenced outside all optional/alternative parts
        that can skip them); the default ``required`` of an intent is built from these."""
        return _mandatory(self.root)

    def count(self, slot_sizes: Mapping[str, int] | None = None) -> int:
        """Number of expansions, each slot reference multiplied by ``slot_sizes[name]``
        (missing slots count 1), computed without enumerating.

        This counts derivations: a template with ambiguous parts (``[a] [a]``) may produce the
        same sentence twice, so it is an upper bound on distinct sentences, and equals
        ``len(list(self.expand()))`` when no sizes are given.
        """
        return _count(self.root, slot_sizes or {})

    def expand(self) -> Iterator[Expansion]:
        """Yield every expansion in template order, slot references left as placeholders."""
        for raw in _expand(self.root):
            yield normalize(raw)

    def sample(self, rng: random.Random, slot_sizes: Mapping[str, int] | None = None) -> Expansion:
        """Draw one expansion; with ``slot_sizes`` and slot values then drawn uniformly, every
        full sentence (derivation) is equally likely."""
        return normalize(_sample(self.root, rng, slot_sizes or {}))


def normalize(raw: Iterable[Piece]) -> Expansion:
    """Merge adjacent text, collapse whitespace and strip both ends of the whole expansion."""
    merged: list[Piece] = []
    for piece in raw:
        if isinstance(piece, str):
            if merged and isinstance(merged[-1], str):
                merged[-1] = merged[-1] + piece
            else:
                merged.append(piece)
        else:
            merged.append(piece)
    out: list[Piece] = []
    for i, piece in enumerate(merged):
        if isinstance(piece, str):
            piece = re.sub(r"\s+", " ", piece)
            if i == 0:
                piece = piece.lstrip(" ")
            if i == len(merged) - 1:
                piece = piece.rstrip(" ")
            if not piece:
                continue
        out.append(piece)
    return tuple(out)


def parse_template(text: str) -> Template:
    """Parse ``text`` into a :class:`Template`; raise :class:`TemplateError` if it is invalid
    (unbalanced brackets, empty alternative or slot name, or a template that can expand to an
    empty sentence)."""
    if not isinstance(text, str):
        raise TemplateError(f"template must be a string, not {type(text).__name__}", 0, "")
    if not text.strip():
        raise TemplateError("empty template", 0, text)
    root = _Parser(text).parse()
    if _can_be_empty(root):
        raise TemplateError("template can expand to an empty sentence", 0, text)
    return Template(text, root)


class _Parser:
    """Recursive-descent parser over one template string."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def error(self, message: str, column: int) -> TemplateError:
        return TemplateError(message, column, self.text)

    def parse(self) -> Group:
        alternatives = self.alternatives(None, 0, 0)
        return Group(alternatives)

    def alternatives(self, opener: str | None, open_col: int, depth: int) -> tuple[Sequence, ...]:
        """Parse ``alt | alt | ...`` up to the closer of ``opener`` (or the end of the text)."""
        if depth > MAX_DEPTH:
            raise self.error(f"groups nested deeper than {MAX_DEPTH} levels", open_col)
        closer = _CLOSERS.get(opener or "")
        text = self.text
        alternatives: list[Sequence] = []
        items: list[Node] = []

        def finish(end_col: int) -> None:
            if not any(not isinstance(item, Space) for item in items):
                if opener is not None and not alternatives and text[end_col] == closer:
                    raise self.error(f"empty group '{opener}{closer}'", open_col)
                raise self.error("empty alternative", end_col)
            alternatives.append(Sequence(tuple(items)))
            items.clear()

        while self.pos < len(text):
            col = self.pos
            char = text[col]
            if char in ")]}":
                if char == closer:
                    finish(col)
                    self.pos += 1
                    return tuple(alternatives)
                if opener is None:
                    raise self.error(f"unbalanced '{char}'", col)
                raise self.error(
                    f"expected '{closer}' to close '{opener}' from column {open_col + 1}, "
                    f"found '{char}'",
                    col,
                )
            if char == "|":
                finish(col)
                self.pos += 1
            elif char in "([":
                self.pos += 1
                group_alts = self.alternatives(char, col, depth + 1)
                items.append(Group(group_alts, optional=char == "["))
            elif char == "{":
                items.append(self.slot())
            elif char.isspace():
                while self.pos < len(text) and text[self.pos].isspace():
                    self.pos += 1
                if not items or not isinstance(items[-1], Space):
                    items.append(Space())
            else:
                while (
                    self.pos < len(text)
                    and text[self.pos] not in _SPECIAL
                    and not text[self.pos].isspace()
                ):
                    self.pos += 1
                items.append(Text(text[col : self.pos]))
        if opener is not None:
            raise self.error(f"unclosed '{opener}'", open_col)
        if not any(not isinstance(item, Space) for item in items):
            raise self.error("empty alternative", len(text))
        alternatives.append(Sequence(tuple(items)))
        return tuple(alternatives)

    def slot(self) -> SlotRef:
        """Parse ``{name}`` starting at the current ``{``."""
        start = self.pos
        end = start + 1
        text = self.text
        while end < len(text) and text[end] not in _SPECIAL:
            end += 1
        if end >= len(text) or text[end] != "}":
            raise self.error("unclosed '{'", start)
        name = text[start + 1 : end].strip()
        if not name:
            raise self.error("empty slot name '{}'", start)
        if not SLOT_NAME_RE.match(name):
            raise self.error(f"invalid slot name '{name}'", start)
        self.pos = end + 1
        return SlotRef(name)


def _children(node: Node | Sequence) -> Iterator[Node | Sequence]:
    if isinstance(node, Sequence):
        yield from node.items
    elif isinstance(node, Group):
        yield from node.alternatives


def _slot_names(node: Node | Sequence) -> Iterator[str]:
    if isinstance(node, SlotRef):
        yield node.name
    for child in _children(node):
        yield from _slot_names(child)


def _mandatory(node: Node | Sequence) -> frozenset[str]:
    if isinstance(node, SlotRef):
        return frozenset({node.name})
    if isinstance(node, Sequence):
        return frozenset().union(*(_mandatory(item) for item in node.items))
    if isinstance(node, Group):
        if node.optional:
            return frozenset()
        sets = [_mandatory(alt) for alt in node.alternatives]
        return frozenset.intersection(*sets)
    return frozenset()


def _can_be_empty(node: Node | Sequence) -> bool:
    if isinstance(node, (Text, SlotRef)):
        return False
    if isinstance(node, Space):
        return True
    if isinstance(node, Sequence):
        return all(_can_be_empty(item) for item in node.items)
    return node.optional or any(_can_be_empty(alt) for alt in node.alternatives)


def _count(node: Node | Sequence, sizes: Mapping[str, int]) -> int:
    if isinstance(node, SlotRef):
        return sizes.get(node.name, 1)
    if isinstance(node, Sequence):
        total = 1
        for item in node.items:
            total *= _count(item, sizes)
        return total
    if isinstance(node, Group):
        return sum(_count(alt, sizes) for alt in node.alternatives) + int(node.optional)
    return 1


def _expand(node: Node | Sequence) -> Iterator[tuple[Piece, ...]]:
    if isinstance(node, Text):
        yield (node.text,)
    elif isinstance(node, Space):
        yield (" ",)
    elif isinstance(node, SlotRef):
        yield (node,)
    elif isinstance(node, Sequence):
        parts = [list(_expand(item)) for item in node.items]
        for combo in itertools.product(*parts):
            yield tuple(itertools.chain.from_iterable(combo))
    else:
        for alt in node.alternatives:
            yield from _expand(alt)
        if node.optional:
            yield ()


def _sample(node: Node | Sequence, rng: random.Random, sizes: Mapping[str, int]) -> list[Piece]:
    if isinstance(node, Text):
        return [node.text]
    if isinstance(node, Space):
        return [" "]
    if isinstance(node, SlotRef):
        return [node]
    if isinstance(node, Sequence):
        out: list[Piece] = []
        for item in node.items:
            out.extend(_sample(item, rng, sizes))
        return out
    choices: list[Sequence | None] = list(node.alternatives)
    weights = [_count(alt, sizes) for alt in node.alternatives]
    if node.optional:
        choices.append(None)
        weights.append(1)
    total = sum(weights)
    if total <= 0:
        chosen = choices[rng.randrange(len(choices))]
    else:
        r = rng.randrange(total)
        chosen = choices[-1]
        for choice, weight in zip(choices, weights, strict=True):
            if r < weight:
                chosen = choice
                break
            r -= weight
    return [] if chosen is None else _sample(chosen, rng, sizes)
