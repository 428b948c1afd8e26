from __future__ import annotations

from agent.slots import Slot, SlotMatcher, SlotValue

LISTS = {
    "room": (
        SlotValue("kitchen", ("kitchen",)),
        SlotValue("living_room", ("living room", "lounge")),
        SlotValue("room", ("room",)),
    ),
    "brightness": (SlotValue(50, ("50", "fifty")), SlotValue(5, ("five",))),
    "minutes": (SlotValue(5, ("five",)), SlotValue(50, ("fifty",))),
}


def test_longest_match_and_canonical_value() -> None:
    text = "turn on the living room light"
    slots = SlotMatcher(LISTS).match(text, ["room"])
    assert slots == (Slot("room", "living_room", "living room", 12, 23),)
    assert text[12:23] == "living room"


def test_synonym_resolves_to_canonical() -> None:
    slots = SlotMatcher(LISTS).match("lounge lights off", ["room"])
    assert [(s.value, s.raw, s.start, s.end) for s in slots] == [("living_room", "lounge", 0, 6)]


def test_only_the_intents_slots_are_searched() -> None:
    assert SlotMatcher(LISTS).match("kitchen to fifty", ["brightness"]) == (
        Slot("brightness", 50, "fifty", 11, 16),
    )
    assert SlotMatcher(LISTS).match("kitchen to fifty", []) == ()


def test_shared_phrase_fills_the_first_empty_list() -> None:
    slots = SlotMatcher(LISTS).match("five minutes at fifty", ["minutes", "brightness"])
    assert [(s.name, s.value) for s in slots] == [("minutes", 5), ("brightness", 50)]


def test_korean() -> None:
    matcher = SlotMatcher({"room": (SlotValue("living_room", ("거실",)),)})
    assert matcher.match("거실 불 켜 줘", ["room"]) == (Slot("room", "living_room", "거실", 0, 2),)
