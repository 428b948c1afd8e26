"""Find slot values (rooms, numbers, ...) in a transcript from the spec's value lists.

Matching is longest-first over whole words of the normalized transcript, so "living room"
wins over "room", and every synonym resolves to its canonical value. Character ranges
refer to the normalized text, which is what the daemon publishes as the Hermes ``input``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from agent.featurize import normalize


@dataclass(frozen=True)
class SlotValue:
    """One canonical value of a slot list and the words that say it."""

    value: str | int
    synonyms: tuple[str, ...]


@dataclass(frozen=True)
class Slot:
    """A slot value found in a transcript: Hermes' entity, rawValue, value and range."""

    name: str
    value: str | int
    raw: str
    start: int
    end: int


class SlotMatcher:
    """Longest-match lookup of every slot list's synonyms in a sentence."""

    def __init__(self, lists: Mapping[str, Iterable[SlotValue]]) -> None:
        # synonym words -> [(slot name, canonical value)], in declaration order
        self._table: dict[tuple[str, ...], list[tuple[str, str | int]]] = {}
        # first word -> longest synonym starting with it: most words start none
        self._starts: dict[str, int] = {}
        for name, values in lists.items():
            for value in values:
                for synonym in value.synonyms:
                    words = tuple(normalize(synonym).split())
                    if not words:
                        continue
                    self._table.setdefault(words, []).append((name, value.value))
                    self._starts[words[0]] = max(self._starts.get(words[0], 0), len(words))

    def match(self, text: str, names: Iterable[str]) -> tuple[Slot, ...]:
        """Slots of the lists in ``names`` found in ``text`` (already normalized), left to right.

        When one phrase belongs to several lists (numbers, say), it fills the first list
        in ``names`` order that is still empty.
        """
        wanted = tuple(names)
        if not wanted:
            return ()
        words = text.split()
        starts: list[int] = []
        offset = 0
        for word in words:
            offset = text.index(word, offset)
            starts.append(offset)
            offset += len(word)
        found: list[Slot] = []
        filled: set[str] = set()
        i = 0
        while i < len(words):
            longest = self._starts.get(words[i], 0)
            for length in range(min(longest, len(words) - i), 0, -1):
                candidates = self._table.get(tuple(words[i : i + length]))
                if not candidates:
                    continue
                usable = sorted(
                    (c for c in candidates if c[0] in wanted), key=lambda c: wanted.index(c[0])
                )
                if not usable:
                    continue
                free = [c for c in usable if c[0] not in filled]
                name, value = (free or usable)[0]
                start = starts[i]
                end = starts[i + length - 1] + len(words[i + length - 1])
                found.append(Slot(name, value, text[start:end], start, end))
                filled.add(name)
                i += length
                break
            else:
                i += 1
        return tuple(found)
