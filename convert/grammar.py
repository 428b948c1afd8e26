"""Vosk grammars of a spec: its whole sentences when there are few, else its vocabulary.

A list of whole sentences constrains Vosk far more than a list of words (measured on the
Korean example: 31 of 164 synthesized commands decoded exactly against 3), so small specs
get one; a spec that expands to more than :data:`MAX_PHRASES` sentences gets the words.
The words are computed on the template AST (without expanding whole sentences), tracking the
text fragments at the edges of each part so that glued parts such as ``light[s]`` yield the
complete words ``light`` and ``lights``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from convert.sentences import expand_templates
from convert.spec import Spec
from convert.templates import Group, Sequence, SlotRef, Space, Template, Text

__all__ = ["MAX_PHRASES", "template_words", "vosk_grammar", "vosk_phrases", "vosk_vocabulary"]

MAX_PHRASES: Final = 2000
"""Above this many sentences a grammar is a word list (Vosk compiles phrases at start-up)."""


@dataclass(frozen=True)
class _Words:
    """What a template part can expand to, word-wise.

    ``whole``: expansions without a word boundary (a fragment that glues to both neighbours);
    for expansions with a boundary, ``heads`` / ``tails`` are the fragments before the first /
    after the last boundary and ``inner`` the complete words between.
    """

    whole: frozenset[str] = frozenset()
    heads: frozenset[str] = frozenset()
    tails: frozenset[str] = frozenset()
    inner: frozenset[str] = frozenset()

    def then(self, other: _Words) -> _Words:
        """The parts of ``self`` followed by ``other`` with nothing in between."""
        return _Words(
            whole=frozenset(a + b for a in self.whole for b in other.whole),
            heads=self.heads | {a + h for a in self.whole for h in other.heads},
            tails=other.tails | {t + b for t in self.tails for b in other.whole},
            inner=self.inner | other.inner | {t + h for t in self.tails for h in other.heads},
        )

    def union(self, other: _Words) -> _Words:
        """Either ``self`` or ``other``."""
        return _Words(
            self.whole | other.whole,
            self.heads | other.heads,
            self.tails | other.tails,
            self.inner | other.inner,
        )

    def words(self) -> frozenset[str]:
        return frozenset(w for w in self.whole | self.heads | self.tails | self.inner if w)


_EMPTY = _Words(whole=frozenset({""}))
_SPACE = _Words(heads=frozenset({""}), tails=frozenset({""}))


def _phrase(text: str) -> _Words:
    words = text.split()
    if len(words) <= 1:
        return _Words(whole=frozenset(words or [""]))
    return _Words(
        heads=frozenset(words[:1]), tails=frozenset(words[-1:]), inner=frozenset(words[1:-1])
    )


def _node_words(node: object, slots: Mapping[str, _Words]) -> _Words:
    if isinstance(node, Text):
        return _Words(whole=frozenset({node.text}))
    if isinstance(node, Space):
        return _SPACE
    if isinstance(node, SlotRef):
        return slots.get(node.name, _EMPTY)
    if isinstance(node, Sequence):
        result = _EMPTY
        for item in node.items:
            result = result.then(_node_words(item, slots))
        return result
    if isinstance(node, Group):
        result = _EMPTY if node.optional else _Words()
        for alternative in node.alternatives:
            result = result.union(_node_words(alternative, slots))
        return result
    raise TypeError(f"not a template node: {node!r}")


def template_words(template: Template, synonyms: Mapping[str, Iterable[str]]) -> frozenset[str]:
    """Every word of every expansion of ``template``, slots filled with ``synonyms[name]``."""
    slots: dict[str, _Words] = {}
    for name, phrases in synonyms.items():
        words = _Words()
        for phrase in phrases:
            words = words.union(_phrase(phrase))
        slots[name] = words
    return _node_words(template.root, slots).words()


def vosk_vocabulary(spec: Spec) -> list[str]:
    """The sorted, lower-cased words of every sentence (intents and ``none:``) and every slot
    synonym, for a Vosk grammar (the runtime appends ``"[unk]"``)."""
    synonyms = {
        name: [raw for value in slot_list.values for raw in value.synonyms]
        for name, slot_list in spec.slots.items()
    }
    words: set[str] = set()
    for phrases in synonyms.values():
        for phrase in phrases:
            words.update(phrase.split())
    templates = [t for intent in spec.intents for t in intent.templates]
    for template in [*templates, *spec.negatives]:
        words.update(template_words(template, synonyms))
    return sorted({word.lower() for word in words})


def _sentence_count(spec: Spec) -> int:
    sizes = {
        name: sum(len(value.synonyms) for value in slot_list.values)
        for name, slot_list in spec.slots.items()
    }
    templates = [t for intent in spec.intents for t in intent.templates]
    return sum(t.count(sizes) for t in [*templates, *spec.negatives])


def vosk_phrases(spec: Spec, limit: int = MAX_PHRASES) -> list[str] | None:
    """Every sentence of the spec (intents and ``none:``, every synonym), lower-cased and
    sorted, or None when there are more than ``limit``."""
    total = _sentence_count(spec)
    if total > limit:
        return None
    rng = random.Random(0)  # unused: with limit >= the count, expansion is exhaustive
    groups = [(intent.templates, intent.name) for intent in spec.intents]
    if spec.negatives:
        groups.append((spec.negatives, "none"))
    phrases: set[str] = set()
    for templates, label in groups:
        for example in expand_templates(templates, label, spec.slots, total, rng):
            phrases.add(" ".join(example.text.lower().split()))
    return sorted(phrases)


def vosk_grammar(spec: Spec, limit: int = MAX_PHRASES) -> list[str]:
    """What ``grammar.json`` holds: :func:`vosk_phrases` if the spec is small, else
    :func:`vosk_vocabulary` (the runtime appends ``"[unk]"`` either way)."""
    phrases = vosk_phrases(spec, limit)
    return phrases if phrases is not None else vosk_vocabulary(spec)
