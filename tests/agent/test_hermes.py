"""Hermes payloads, field by field against rhasspy-hermes' JSON, and through a real broker."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent import hermes
from agent.classifier import Classification, IntentClassifier
from agent.mqtt import MqttLink, MqttSettings
from agent.slots import Slot
from tests.agent.broker import HOST, Mosquitto, Subscriber, broker  # noqa: F401

DIM = Classification(
    text="dim the kitchen light to fifty percent",
    intent="LightDim",
    confidence=0.97,
    label="LightDim",
    slots=(
        Slot("room", "kitchen", "kitchen", 8, 15),
        Slot("brightness", 50, "fifty", 25, 30),
    ),
)


def test_intent_payload_matches_nlu_intent() -> None:
    message = hermes.intent(
        DIM, site_id="kitchen", session_id="s1", id="r1", asr_confidence=0.8, lang="en"
    )
    assert message.topic == "hermes/intent/LightDim"
    assert (message.qos, message.retain) == (1, False)
    body = json.loads(message.payload)
    # NluIntent's fields, in its order (dataclasses_json, camelCase).
    assert list(body) == [
        "input", "intent", "siteId", "id", "slots", "sessionId", "customData", "asrTokens",
        "asrConfidence", "rawInput", "wakewordId", "lang",
    ]  # fmt: skip
    assert body["input"] == DIM.text
    assert body["intent"] == {"intentName": "LightDim", "confidenceScore": 0.97}
    assert body["siteId"] == "kitchen"
    assert body["id"] == "r1"
    assert body["sessionId"] == "s1"
    assert body["customData"] is None
    assert body["asrConfidence"] == 0.8
    assert body["rawInput"] == DIM.text
    assert body["wakewordId"] is None
    assert body["lang"] == "en"
    room, brightness = body["slots"]
    assert list(room) == ["entity", "value", "slotName", "rawValue", "confidence", "range"]
    assert room == {
        "entity": "room",
        "value": {"kind": "Unknown", "value": "kitchen"},
        "slotName": "room",
        "rawValue": "kitchen",
        "confidence": 1.0,
        "range": {"start": 8, "end": 15, "rawStart": 8, "rawEnd": 15},
    }
    assert brightness["value"] == {"kind": "Number", "value": 50}
    assert brightness["rawValue"] == "fifty"
    assert DIM.text[brightness["range"]["start"] : brightness["range"]["end"]] == "fifty"
    (tokens,) = body["asrTokens"]
    assert [t["value"] for t in tokens] == DIM.text.split()
    assert tokens[2] == {
        "value": "kitchen", "confidence": 1.0, "rangeStart": 8, "rangeEnd": 15, "time": None,
    }  # fmt: skip


def test_intent_defaults_are_rhasspys() -> None:
    body = json.loads(hermes.intent(DIM).payload)
    assert body["siteId"] == "default"
    assert body["sessionId"] is None and body["id"] is None and body["asrConfidence"] is None


def test_raw_input_can_differ_from_the_normalized_input() -> None:
    body = json.loads(hermes.intent(DIM, raw_input="Dim the kitchen light to 50%").payload)
    assert body["rawInput"] == "Dim the kitchen light to 50%"
    assert body["input"] == DIM.text


def test_a_rejected_classification_is_not_an_intent() -> None:
    rejected = Classification("tell me a joke", None, 0.99, "<none>", (), "out_of_scope")
    with pytest.raises(ValueError, match="out_of_scope"):
        hermes.intent(rejected)


def test_intent_names_cannot_change_the_topic() -> None:
    with pytest.raises(ValueError):
        hermes.intent_topic("Light/On")
    with pytest.raises(ValueError):
        hermes.intent_topic("#")


def test_not_recognized_matches_nlu_intent_not_recognized() -> None:
    message = hermes.not_recognized("tell me a joke", "kitchen", "s1", "r1")
    assert message.topic == "hermes/nlu/intentNotRecognized"
    assert message.qos == 1
    body = json.loads(message.payload)
    assert list(body) == ["input", "siteId", "id", "customData", "sessionId"]
    assert body == {
        "input": "tell me a joke",
        "siteId": "kitchen",
        "id": "r1",
        "customData": None,
        "sessionId": "s1",
    }


def test_text_captured_matches_asr_text_captured() -> None:
    message = hermes.text_captured("turn on the kitchen light", 0.91, 1.25, "kitchen", "s1")
    assert message.topic == "hermes/asr/textCaptured"
    body = json.loads(message.payload)
    assert list(body) == [
        "text", "likelihood", "seconds", "siteId", "sessionId", "wakewordId", "asrTokens",
        "lang",
    ]  # fmt: skip
    assert body["text"] == "turn on the kitchen light"
    assert body["likelihood"] == 0.91
    assert body["seconds"] == 1.25
    assert body["siteId"] == "kitchen"
    assert body["sessionId"] == "s1"


def test_hotword_detected_matches_rhasspy_hotword_detected() -> None:
    message = hermes.hotword_detected("okay_nabu", "2", 0.85, "kitchen", "s1", "ko")
    assert message.topic == "hermes/hotword/okay_nabu/detected"
    assert (message.qos, message.retain) == (1, False)
    assert json.loads(message.payload) == {
        "modelId": "okay_nabu",
        "modelVersion": "2",
        "modelType": "universal",
        "currentSensitivity": 0.85,
        "siteId": "kitchen",
        "sessionId": "s1",
        "sendAudioCaptured": None,
        "lang": "ko",
        "customEntities": None,
    }
    for bad in ("", "a/b", "a+", "#"):
        with pytest.raises(ValueError, match="cannot be used in an MQTT topic"):
            hermes.hotword_detected(bad)


def test_the_wake_word_is_named_in_captured_text_and_intents() -> None:
    captured = hermes.text_captured("lights on", 1.0, 0.1, wakeword_id="okay_nabu")
    intent = hermes.intent(DIM, wakeword_id="okay_nabu")
    assert json.loads(captured.payload)["wakewordId"] == "okay_nabu"
    assert json.loads(intent.payload)["wakewordId"] == "okay_nabu"


def test_non_ascii_text_is_written_as_utf8() -> None:
    message = hermes.text_captured("거실 불 켜", 1.0, 0.5)
    assert "거실 불 켜".encode() in message.payload


def test_the_real_classifier_output_becomes_an_intent(en_model: Path) -> None:
    classifier = IntentClassifier.load(en_model)
    result = classifier.classify("dim the kitchen light to fifty percent")
    assert result.intent == "LightDim"
    body = json.loads(hermes.intent(result).payload)
    values = {s["slotName"]: s["value"] for s in body["slots"]}
    assert values["room"] == {"kind": "Unknown", "value": "kitchen"}
    assert values["brightness"] == {"kind": "Number", "value": 50}
    for slot in body["slots"]:
        assert body["input"][slot["range"]["start"] : slot["range"]["end"]] == slot["rawValue"]


def test_round_trip_through_mosquitto(broker: Mosquitto) -> None:  # noqa: F811
    settings = MqttSettings(HOST, broker.port, client_id="hermes-test", site_id="rt")
    link = MqttLink(settings)
    with Subscriber(broker.port, ("hermes/intent/#", "hermes/nlu/#", "hermes/asr/#")) as sub:
        link.start()
        try:
            assert link.wait_connected(10)
            sent = [
                hermes.text_captured(DIM.text, 0.9, 1.0, "rt"),
                hermes.intent(DIM, site_id="rt"),
                hermes.not_recognized("tell me a joke", "rt"),
            ]
            for message in sent:
                assert link.publish(message, timeout=5)
            for message in sent:
                got = sub.wait_for(message.topic)
                assert got.qos == 1
                assert json.loads(got.payload) == json.loads(message.payload)
        finally:
            link.stop()
