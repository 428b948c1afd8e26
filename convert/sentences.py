"""Training sentences: expand an intent's templates with slot synonyms into labelled examples.

Small intents are enumerated completely; intents whose templates explode are sampled, with the
budget shared fairly between templates and every slot synonym forced into some example, so the
model sees each way of saying each value. Everything is deterministic for a given seed.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from agent.metadata import NONE_LABEL
from convert.spec import Intent, SlotList, SlotValue, Spec
from convert.templates import Expansion, SlotRef, Template

__all__ = [
    "NONE_INTENT",
    "Example",
    "SlotSpan",
    "expand_intent",
    "expand_negatives",
    "expand_spec",
    "expand_templates",
    "render",
]

NONE_INTENT: Final = NONE_LABEL
"""Label of out-of-scope (negative) examples; not a valid intent name, so it cannot clash."""

DEFAULT_LIMIT: Final = 1000

Choice = tuple[SlotValue, str]
"""A slot value and the synonym used to say it."""


@dataclass(frozen=True)
class SlotSpan:
    """A slot filled in an example: ``text[start:end] == raw`` says canonical ``value``."""

    name: str
    value: str | int
    raw: str
    start: int
    end: int


@dataclass(frozen=True)
class Example:
    """One training sentence (single-spaced words), its intent label and its slot spans."""

    text: str
    intent: str
    slots: tuple[SlotSpan, ...] = ()


def render(expansion: Expansion, fills: Sequence[Choice]) -> tuple[str, tuple[SlotSpan, ...]]:
    """Substitute ``fills`` (one per slot reference, in order) into an expansion; return the
    text and the character span of every slot."""
    refs = len(_refs(expansion))
    if refs != len(fills):
        raise ValueError(f"{len(fills)} fills for {refs} slot references")
    parts: list[str] = []
    spans: list[SlotSpan] = []
    position = 0
    slot_index = 0
    for piece in expansion:
        if isinstance(piece, SlotRef):
            value, raw = fills[slot_index]
            slot_index += 1
            spans.append(SlotSpan(piece.name, value.value, raw, position, position + len(raw)))
            piece = raw
        parts.append(piece)
        position += len(piece)
    return "".join(parts), tuple(spans)


def expand_intent(
    intent: Intent, slots: Mapping[str, SlotList], limit: int, rng: random.Random
) -> list[Example]:
    """Examples for one intent: all sentences if there are at most ``limit``, else ``limit``
    distinct sampled ones (fewer only if sampling keeps hitting duplicates)."""
    return expand_templates(intent.templates, intent.name, slots, limit, rng)


def expand_spec(spec: Spec, limit_per_intent: int = DEFAULT_LIMIT, seed: int = 0) -> list[Example]:
    """Examples for every intent, in spec order; each intent has its own seeded generator so
    editing one intent does not reshuffle the others."""
    examples: list[Example] = []
    for intent in spec.intents:
        rng = random.Random(f"{seed}:{intent.name}")
        examples.extend(expand_intent(intent, spec.slots, limit_per_intent, rng))
    return examples


def expand_negatives(spec: Spec, limit: int = DEFAULT_LIMIT, seed: int = 0) -> list[Example]:
    """Out-of-scope examples from the spec's ``none:`` templates, labelled :data:`NONE_INTENT`."""
    rng = random.Random(f"{seed}:{NONE_INTENT}")
    return expand_templates(spec.negatives, NONE_INTENT, spec.slots, limit, rng)


def expand_templates(
    templates: Sequence[Template],
    label: str,
    slots: Mapping[str, SlotList],
    limit: int,
    rng: random.Random,
) -> list[Example]:
    """Examples labelled ``label`` from ``templates``; see :func:`expand_intent`."""
    return _Expander(templates, label, slots, rng).run(limit)


class _Expander:
    """One expansion run: holds the distinct examples so far and the synonyms still to cover."""

    def __init__(
        self,
        templates: Sequence[Template],
        label: str,
        slots: Mapping[str, SlotList],
        rng: random.Random,
    ) -> None:
        self.templates = list(templates)
        self.label = label
        self.rng = rng
        names = sorted(frozenset().union(*(t.slot_names() for t in self.templates)))
        self.choices: dict[str, list[Choice]] = {
            name: [(value, raw) for value in slots[name].values for raw in value.synonyms]
            for name in names
        }
        self.sizes = {name: len(choices) for name, choices in self.choices.items()}
        self.examples: dict[str, Example] = {}
        self.pending: dict[str, list[int]] = {}

    def run(self, limit: int) -> list[Example]:
        if limit <= 0 or not self.templates:
            return []
        counts = [template.count(self.sizes) for template in self.templates]
        if sum(counts) <= limit:
            for template in self.templates:
                self.enumerate(template)
            return list(self.examples.values())
        for name, choices in self.choices.items():
            order = list(range(len(choices)))
            self.rng.shuffle(order)
            self.pending[name] = order
        quotas = _allocate(counts, limit)
        sampled: list[Template] = []
        for template, count, quota in zip(self.templates, counts, quotas, strict=True):
            if count <= quota:
                self.enumerate(template)
            elif quota > 0:
                sampled.append(template)
                target = len(self.examples) + quota
                self.sample(template, target, attempts=20 * quota + 50)
        # Top up when duplicates between templates left the total short of the limit.
        budget = 20 * (limit - len(self.examples)) + 50
        while sampled and len(self.examples) < limit and budget > 0:
            for template in sampled:
                budget -= 1
                self.sample(template, len(self.examples) + 1, attempts=1)
                if len(self.examples) >= limit:
                    break
        return list(self.examples.values())

    def add(self, expansion: Expansion, fills: Sequence[Choice]) -> bool:
        """Record an example unless its text is already there; True if it was new."""
        text, spans = render(expansion, fills)
        if text in self.examples:
            return False
        self.examples[text] = Example(text, self.label, spans)
        return True

    def enumerate(self, template: Template) -> None:
        for expansion in template.expand():
            refs = _refs(expansion)
            for fills in itertools.product(*(self.choices[ref.name] for ref in refs)):
                self.add(expansion, fills)

    def sample(self, template: Template, target: int, attempts: int) -> None:
        """Draw sentences from ``template`` until there are ``target`` examples, preferring
        synonyms not yet seen in any sampled example."""
        for _ in range(attempts):
            if len(self.examples) >= target:
                return
            expansion = template.sample(self.rng, self.sizes)
            picks: list[tuple[str, int]] = []
            for ref in _refs(expansion):
                pending = [i for i in self.pending.get(ref.name, []) if (ref.name, i) not in picks]
                size = len(self.choices[ref.name])
                index = pending[-1] if pending else self.rng.randrange(size)
                picks.append((ref.name, index))
            fills = [self.choices[name][index] for name, index in picks]
            if self.add(expansion, fills):
                for name, index in picks:
                    pending_list = self.pending.get(name)
                    if pending_list is not None and index in pending_list:
                        pending_list.remove(index)


def _refs(expansion: Iterable[object]) -> list[SlotRef]:
    return [piece for piece in expansion if isinstance(piece, SlotRef)]


def _allocate(counts: Sequence[int], limit: int) -> list[int]:
    """Share ``limit`` between templates as evenly as their sizes allow (water-filling), so a
    template that explodes cannot crowd out the small ones."""
    quotas = [0] * len(counts)
    remaining = limit
    open_ = [i for i, count in enumerate(counts) if count > 0]
    while remaining > 0 and open_:
        share = max(1, remaining // len(open_))
        still_open: list[int] = []
        for i in open_:
            give = min(share, counts[i] - quotas[i], remaining)
            quotas[i] += give
            remaining -= give
            if quotas[i] < counts[i]:
                still_open.append(i)
        open_ = still_open
    return quotas
