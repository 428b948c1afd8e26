"""The accept/reject rules on real transcripts and the committed English model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.classifier import IntentClassifier
from agent.decision import NO_WORDS, UNKNOWN_WORDS, decide
from agent.recognizer import UNK, Transcript, parse_result


@pytest.fixture(scope="module")
def classifier(en_model: Path) -> IntentClassifier:
    return IntentClassifier.load(en_model)


def heard(*words: str) -> Transcript:
    result = {"result": [{"word": w, "start": 0, "end": 0, "conf": 1.0} for w in words]}
    transcript = parse_result(json.dumps(result))
    assert transcript is not None
    return transcript


def test_a_command_is_accepted(classifier: IntentClassifier) -> None:
    decision = decide(heard("turn", "on", "the", "kitchen", "light"), classifier, 0.5)
    assert decision.accepted and decision.reason == ""
    assert decision.intent == "LightOn"
    assert decision.classification is not None
    assert [(s.name, s.value) for s in decision.classification.slots] == [("room", "kitchen")]


def test_unknown_words_reject_before_classification(classifier: IntentClassifier) -> None:
    # Half the words unknown is allowed at 0.5; more is not.
    transcript = heard(UNK, UNK, "turn", "on", "the", "kitchen", "light")
    decision = decide(transcript, classifier, 0.25)
    assert not decision.accepted
    assert decision.reason == UNKNOWN_WORDS and decision.classification is None
    assert decide(transcript, classifier, 0.5).intent == "LightOn"


def test_only_unknown_words(classifier: IntentClassifier) -> None:
    decision = decide(heard(UNK, UNK), classifier, 1.0)
    assert decision.reason == NO_WORDS and decision.intent is None


def test_out_of_scope_and_missing_slots_keep_the_classifier_reason(
    classifier: IntentClassifier,
) -> None:
    weather = decide(heard("what", "is", "the", "weather", "tomorrow"), classifier, 0.5)
    assert not weather.accepted
    assert weather.reason in ("out_of_scope", "low_confidence")
    assert weather.classification is not None and weather.intent is None
