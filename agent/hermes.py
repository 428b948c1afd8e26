"""Hermes protocol messages, field for field as rhasspy-hermes serializes them.

Rhasspy, Snips skills and Node-RED flows that listen on ``hermes/intent/#`` then work
unchanged. Unlike Rhasspy (QoS 0) every message goes out at QoS 1, so a command that the
broker accepted is not lost on the way.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from agent.actions import Message

if TYPE_CHECKING:
    # Only for annotations: importing the classifier would load numpy and the interpreter.
    from agent.classifier import Classification
    from agent.slots import Slot

TEXT_CAPTURED_TOPIC = "hermes/asr/textCaptured"
NOT_RECOGNIZED_TOPIC = "hermes/nlu/intentNotRecognized"
INTENT_TOPIC_PREFIX = "hermes/intent/"
HOTWORD_TOPIC = "hermes/hotword/{}/detected"
QOS = 1


def _message(topic: str, body: dict[str, Any]) -> Message:
    # rhasspy-hermes writes ensure_ascii=False: Korean and accented text stays readable.
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Message(topic, payload, QOS, False)


def _slot_value(value: str | int) -> dict[str, Any]:
    # rhasspy-nlu's Entity.value_dict: "Number" for numbers, "Unknown" for anything else.
    kind = "Number" if isinstance(value, int | float) and not isinstance(value, bool) else "Unknown"
    return {"kind": kind, "value": value}


def _slot(slot: Slot) -> dict[str, Any]:
    # Field order of rhasspyhermes.intent.Slot; the ranges are over ``input``, which is
    # also the raw input here, so rawStart/rawEnd equal start/end.
    return {
        "entity": slot.name,
        "value": _slot_value(slot.value),
        "slotName": slot.name,
        "rawValue": slot.raw,
        "confidence": 1.0,
        "range": {
            "start": slot.start,
            "end": slot.end,
            "rawStart": slot.start,
            "rawEnd": slot.end,
        },
    }


def _asr_tokens(text: str) -> list[list[dict[str, Any]]]:
    # As NluIntent.make_asr_tokens: one ASR pass, whitespace tokens with their ranges.
    tokens: list[dict[str, Any]] = []
    start = 0
    for word in text.split():
        start = text.index(word, start)
        tokens.append(
            {
                "value": word,
                "confidence": 1.0,
                "rangeStart": start,
                "rangeEnd": start + len(word),
                "time": None,
            }
        )
        start += len(word)
    return [tokens]


def text_captured(
    text: str,
    likelihood: float,
    seconds: float,
    site_id: str = "default",
    session_id: str | None = None,
    lang: str | None = None,
    wakeword_id: str | None = None,
) -> Message:
    """``hermes/asr/textCaptured``: what the recognizer heard, how sure it was, how long it took."""
    return _message(
        TEXT_CAPTURED_TOPIC,
        {
            "text": text,
            "likelihood": likelihood,
            "seconds": seconds,
            "siteId": site_id,
            "sessionId": session_id,
            "wakewordId": wakeword_id,
            "asrTokens": None,
            "lang": lang,
        },
    )


def hotword_detected(
    wakeword_id: str,
    model_version: str = "",
    sensitivity: float = 1.0,
    site_id: str = "default",
    session_id: str | None = None,
    lang: str | None = None,
) -> Message:
    """``hermes/hotword/<wakewordId>/detected`` (rhasspy-hermes' HotwordDetected): the
    ``sessionId`` is the one the command's textCaptured and intent then carry."""
    if not wakeword_id or any(c in wakeword_id for c in "/+#\x00"):
        raise ValueError(f"wake word id {wakeword_id!r} cannot be used in an MQTT topic")
    return _message(
        HOTWORD_TOPIC.format(wakeword_id),
        {
            "modelId": wakeword_id,
            "modelVersion": model_version,
            "modelType": "universal",
            "currentSensitivity": sensitivity,
            "siteId": site_id,
            "sessionId": session_id,
            "sendAudioCaptured": None,
            "lang": lang,
            "customEntities": None,
        },
    )


def intent_topic(intent_name: str) -> str:
    """The topic of an intent, refusing names that would add levels or wildcards."""
    if not intent_name or any(c in intent_name for c in "/+#\x00"):
        raise ValueError(f"intent name {intent_name!r} cannot be used in an MQTT topic")
    return INTENT_TOPIC_PREFIX + intent_name


def intent(
    classification: Classification,
    site_id: str = "default",
    session_id: str | None = None,
    id: str | None = None,  # shadows the builtin: the Hermes field is called id
    asr_confidence: float | None = None,
    raw_input: str | None = None,
    lang: str | None = None,
    wakeword_id: str | None = None,
) -> Message:
    """``hermes/intent/<intentName>`` for an accepted classification (NluIntent's JSON).

    ``raw_input`` is the transcript before normalization; it defaults to the input.
    """
    if classification.intent is None:
        raise ValueError(
            f"cannot publish a rejected classification ({classification.reason}) as an intent"
        )
    text = classification.text
    return _message(
        intent_topic(classification.intent),
        {
            "input": text,
            "intent": {
                "intentName": classification.intent,
                "confidenceScore": classification.confidence,
            },
            "siteId": site_id,
            "id": id,
            "slots": [_slot(slot) for slot in classification.slots],
            "sessionId": session_id,
            "customData": None,
            "asrTokens": _asr_tokens(text),
            "asrConfidence": asr_confidence,
            "rawInput": text if raw_input is None else raw_input,
            "wakewordId": wakeword_id,
            "lang": lang,
        },
    )


def not_recognized(
    text: str,
    site_id: str = "default",
    session_id: str | None = None,
    id: str | None = None,  # shadows the builtin: the Hermes field is called id
) -> Message:
    """``hermes/nlu/intentNotRecognized`` for a transcript that was rejected."""
    return _message(
        NOT_RECOGNIZED_TOPIC,
        {
            "input": text,
            "siteId": site_id,
            "id": id,
            "customData": None,
            "sessionId": session_id,
        },
    )
