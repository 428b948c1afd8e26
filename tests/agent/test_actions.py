"""Action templates: slot filling, typed values, payload encodings, and topic injection."""

from __future__ import annotations

import json

from agent.actions import Message, render_actions
from agent.metadata import Action, IntentInfo
from agent.slots import Slot


def _intent(*actions: Action, slots: tuple[str, ...] = ("room", "brightness")) -> IntentInfo:
    return IntentInfo("LightDim", slots, (), actions)


ROOM = Slot("room", "kitchen", "kitchen", 8, 15)
FIFTY = Slot("brightness", 50, "fifty", 24, 29)


def test_topic_and_json_payload_are_filled_and_numbers_stay_numbers() -> None:
    action = Action("zigbee2mqtt/{room}_light/set", {"brightness_percent": "{brightness}"})
    rendered = render_actions(_intent(action), (ROOM, FIFTY))
    assert rendered.skipped == ()
    assert rendered.messages == (
        Message("zigbee2mqtt/kitchen_light/set", b'{"brightness_percent":50}', 1, False),
    )


def test_strings_with_text_around_a_slot_stay_strings() -> None:
    action = Action(
        "home/{room}", {"say": "dimming {room} to {brightness}%", "n": ["{brightness}"]}
    )
    (message,) = render_actions(_intent(action), (ROOM, FIFTY)).messages
    assert json.loads(message.payload) == {"say": "dimming kitchen to 50%", "n": [50]}


def test_payload_encodings() -> None:
    actions = (
        Action("a/none", None),
        Action("a/text", "ON {room}"),
        Action("a/whole", "{brightness}"),
        Action("a/list", [1, "{room}"]),
        Action("a/number", 7),
        Action("a/retained", {"state": "ON"}, retain=True),
    )
    messages = render_actions(_intent(*actions), (ROOM, FIFTY)).messages
    assert [(m.topic, m.payload, m.retain) for m in messages] == [
        ("a/none", b"", False),
        ("a/text", b"ON kitchen", False),
        ("a/whole", b"50", False),
        ("a/list", b'[1,"kitchen"]', False),
        ("a/number", b"7", False),
        ("a/retained", b'{"state":"ON"}', True),
    ]
    assert all(m.qos == 1 for m in messages)


def test_unicode_payload_is_utf8_not_escaped() -> None:
    room = Slot("room", "거실", "거실", 0, 2)
    (message,) = render_actions(_intent(Action("t", {"room": "{room}"})), (room,)).messages
    assert message.payload == '{"room":"거실"}'.encode()


def test_an_action_with_a_missing_slot_is_skipped_with_a_reason() -> None:
    good = Action("zigbee2mqtt/{room}_light/set", {"state": "ON"})
    needs_brightness = Action("dimmer/set", {"level": "{brightness}"})
    rendered = render_actions(_intent(needs_brightness, good), (ROOM,))
    assert [m.topic for m in rendered.messages] == ["zigbee2mqtt/kitchen_light/set"]
    (reason,) = rendered.skipped
    assert "LightDim action 1" in reason and "slot 'brightness' was not found" in reason


def test_slot_values_cannot_inject_topic_levels_or_wildcards() -> None:
    action = Action("zigbee2mqtt/{room}_light/set", {"state": "ON"})
    for bad in ("a/b", "+", "all#", "x\x00y"):
        rendered = render_actions(_intent(action), (Slot("room", bad, bad, 0, 1),))
        assert rendered.messages == ()
        assert "not allowed in a topic" in rendered.skipped[0]


def test_the_same_characters_are_fine_in_a_payload() -> None:
    action = Action("notes", {"text": "{room}"})
    slot = Slot("room", "a/b+#", "a/b+#", 0, 5)
    assert render_actions(_intent(action), (slot,)).messages[0].payload == b'{"text":"a/b+#"}'


def test_braces_that_are_not_placeholders_are_left_alone() -> None:
    action = Action("t/{room}", "{not a slot} {} {{room}}")
    (message,) = render_actions(_intent(action), (ROOM,)).messages
    assert message.payload == b"{not a slot} {} {kitchen}"


def test_no_actions() -> None:
    rendered = render_actions(_intent(), (ROOM,))
    assert rendered.messages == () and rendered.skipped == ()
