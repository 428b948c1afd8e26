"""Turn a recognized intent's actions into MQTT messages by filling in its slot values.

Templates come from the spec (``zigbee2mqtt/{room}_light/set``); slot values come from
speech, so a value is never allowed to add topic levels or wildcards to a topic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from agent.metadata import IntentInfo
from agent.slots import Slot
from agent.topics import PLACEHOLDER_RE as _PLACEHOLDER
from agent.topics import level_problem, printable, topic_problem


@dataclass(frozen=True)
class Message:
    """One MQTT message, ready to publish."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False


@dataclass(frozen=True)
class RenderedActions:
    """The messages of an intent's actions, and why any action was left out."""

    messages: tuple[Message, ...]
    skipped: tuple[str, ...] = ()


class _Skip(Exception):
    """An action that cannot be rendered; ``str()`` says why."""


def _fill(template: str, values: Mapping[str, str | int], in_topic: bool) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            raise _Skip(f"slot '{name}' was not found")
        text = str(values[name])
        if in_topic and level_problem(text) is not None:
            # The model's loader refuses such values; this guards models assembled by hand.
            raise _Skip(f"slot '{name}' value '{printable(text)}' is not allowed in a topic")
        return text

    return _PLACEHOLDER.sub(replace, template)


def _fill_value(value: Any, values: Mapping[str, str | int]) -> Any:
    if isinstance(value, str):
        whole = _PLACEHOLDER.fullmatch(value)
        if whole is not None:
            name = whole.group(1)
            if name not in values:
                raise _Skip(f"slot '{name}' was not found")
            return values[name]
        return _fill(value, values, in_topic=False)
    if isinstance(value, dict):
        return {
            _fill(str(key), values, in_topic=False): _fill_value(item, values)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_fill_value(item, values) for item in value]
    return value


def _payload_bytes(payload: Any) -> bytes:
    if payload is None:
        return b""
    if isinstance(payload, str):
        return payload.encode("utf-8")
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def render_actions(intent: IntentInfo, slots: tuple[Slot, ...]) -> RenderedActions:
    """Fill every action of ``intent`` with ``slots``; an action that cannot be filled is skipped.

    A string payload (or payload member) that is exactly ``"{slot}"`` becomes the typed
    slot value, so numbers stay numbers in JSON.
    """
    if not intent.actions:
        return RenderedActions(())
    values: dict[str, str | int] = {slot.name: slot.value for slot in slots}
    messages: list[Message] = []
    skipped: list[str] = []
    for index, action in enumerate(intent.actions):
        try:
            topic = _fill(action.topic, values, in_topic=True)
            problem = topic_problem(topic)
            if problem is not None:
                raise _Skip(f"topic '{printable(topic)}' {problem}")
            payload = _payload_bytes(_fill_value(action.payload, values))
        except _Skip as why:
            skipped.append(f"{intent.name} action {index + 1} ({action.topic}): {why}")
            continue
        messages.append(Message(topic, payload, 1, action.retain))
    return RenderedActions(tuple(messages), tuple(skipped))
