"""The wake gate on transcripts as Vosk gives them (built with parse_result from Vosk JSON)."""

from __future__ import annotations

import json

import pytest

from agent.recognizer import UNK, Transcript, parse_result
from agent.wake import WakeGate


def heard(*words: str) -> Transcript:
    result = {
        "result": [
            {"word": w, "start": i * 0.3, "end": i * 0.3 + 0.25, "conf": 0.9}
            for i, w in enumerate(words)
        ],
        "text": " ".join(words),
    }
    transcript = parse_result(json.dumps(result), audio_seconds=1.0)
    assert transcript is not None
    return transcript


def test_without_a_phrase_everything_passes() -> None:
    gate = WakeGate("", 5.0)
    transcript = heard("turn", "on", "the", "light")
    assert not gate.enabled
    assert gate.admit(transcript, 1.0).command is transcript


def test_phrase_and_command_in_one_utterance() -> None:
    gate = WakeGate("Hey  Pi", 5.0)  # normalized like transcripts: lower case, single spaces
    verdict = gate.admit(heard("hey", "pi", "lights", "on"), 3.0)
    assert verdict.woke
    assert verdict.command is not None
    assert verdict.command.text == "lights on"
    assert [w.text for w in verdict.command.words] == ["lights", "on"]
    assert verdict.command.confidence == pytest.approx(0.9)


def test_phrase_alone_opens_a_window_that_one_command_closes() -> None:
    gate = WakeGate("hey pi", 5.0)
    assert gate.admit(heard("hey", "pi"), 10.0).woke
    command = heard("lights", "on")
    assert gate.admit(command, 14.9).command is command
    assert gate.admit(heard("lights", "off"), 15.0).command is None


def test_window_is_measured_in_stream_seconds() -> None:
    gate = WakeGate("hey pi", 2.0)
    gate.admit(heard("hey", "pi"), 10.0)
    assert gate.admit(heard("lights", "on"), 12.01).command is None


def test_without_the_phrase_nothing_passes() -> None:
    gate = WakeGate("hey pi", 5.0)
    verdict = gate.admit(heard("lights", "on"), 1.0)
    assert verdict.command is None and not verdict.woke
    # The phrase must come first, not anywhere.
    assert gate.admit(heard("lights", "hey", "pi"), 2.0).command is None


def test_unknown_words_before_the_phrase_are_kept_for_the_unk_ratio() -> None:
    gate = WakeGate("hey pi", 5.0)
    verdict = gate.admit(heard(UNK, "hey", "pi", "lights", "on"), 1.0)
    assert verdict.command is not None
    assert verdict.command.text == "lights on"
    assert verdict.command.unk_ratio == pytest.approx(1 / 3)


def test_grammar_gets_the_phrase() -> None:
    gate = WakeGate("hey pi", 5.0)
    assert gate.grammar(("lights", "on", "hey")) == ("lights", "on", "hey", "pi")
    phrases = ("lights on", "lights off", UNK)
    assert gate.grammar(phrases) == (
        "hey pi", "lights on", "lights off", UNK, "hey pi lights on", "hey pi lights off",
    )  # fmt: skip
    assert WakeGate("", 1.0).grammar(phrases) is phrases
