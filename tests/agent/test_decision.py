"""The accept/reject rules on real transcripts and the committed English model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.classifier import IntentClassifier
from agent.decision import (
    LOW_WORD_CONFIDENCE,
    NO_WORDS,
    NOT_A_SENTENCE,
    UNKNOWN_WORDS,
    DecisionSettings,
    decide,
    sentence_distance,
)
from agent.query import text_transcript
from agent.recognizer import UNK, Transcript, parse_result

UNK_ONLY = DecisionSettings(max_unk_ratio=0.5, sentence_slack=-1)


@pytest.fixture(scope="module")
def classifier(en_model: Path) -> IntentClassifier:
    return IntentClassifier.load(en_model)


@pytest.fixture(scope="module")
def korean(ko_model: Path) -> IntentClassifier:
    return IntentClassifier.load(ko_model)


def heard(*words: str, conf: float = 1.0) -> Transcript:
    result = {"result": [{"word": w, "start": 0, "end": 0, "conf": conf} for w in words]}
    transcript = parse_result(json.dumps(result))
    assert transcript is not None
    return transcript


def test_a_command_is_accepted(classifier: IntentClassifier) -> None:
    decision = decide(heard("turn", "on", "the", "kitchen", "light"), classifier, UNK_ONLY)
    assert decision.accepted and decision.reason == ""
    assert decision.intent == "LightOn"
    assert decision.classification is not None
    assert [(s.name, s.value) for s in decision.classification.slots] == [("room", "kitchen")]


def test_unknown_words_reject_before_classification(classifier: IntentClassifier) -> None:
    # Half the words unknown is allowed at 0.5; more is not.
    transcript = heard(UNK, UNK, "turn", "on", "the", "kitchen", "light")
    decision = decide(transcript, classifier, DecisionSettings(max_unk_ratio=0.25))
    assert not decision.accepted
    assert decision.reason == UNKNOWN_WORDS and decision.classification is None
    assert decide(transcript, classifier, UNK_ONLY).intent == "LightOn"


def test_only_unknown_words(classifier: IntentClassifier) -> None:
    decision = decide(heard(UNK, UNK), classifier, DecisionSettings(max_unk_ratio=1.0))
    assert decision.reason == NO_WORDS and decision.intent is None


def test_out_of_scope_and_missing_slots_keep_the_classifier_reason(
    classifier: IntentClassifier,
) -> None:
    weather = decide(heard("what", "is", "the", "weather", "tomorrow"), classifier, UNK_ONLY)
    assert not weather.accepted
    assert weather.reason in ("out_of_scope", "low_confidence")
    assert weather.classification is not None and weather.intent is None


def test_a_spoken_sentence_of_the_spec_is_accepted(korean: IntentClassifier) -> None:
    # The Korean grammar is whole sentences: an exact one passes the sentence rule.
    decision = decide(heard("부엌", "불", "꺼", "줘"), korean, DecisionSettings())
    assert decision.accepted and decision.intent == "LightOff"


@pytest.mark.parametrize(
    "words",
    [
        ("부엌", "안방", "불", "끄기"),  # two rooms: grammar-forced chatter
        ("노래", "틀어", "부엌", "불", "줘"),
        ("부엌", "불", "꺼", "줘", "꺼", "줘"),
    ],
)
def test_word_salad_is_not_a_sentence(korean: IntentClassifier, words: tuple[str, ...]) -> None:
    decision = decide(heard(*words), korean, DecisionSettings(sentence_slack=0))
    assert decision.reason == NOT_A_SENTENCE and decision.classification is None


def test_sentence_slack_allows_that_many_words_off(korean: IntentClassifier) -> None:
    one_off = heard("부엌", "불", "좀", "좀", "꺼", "줘")  # one word too many
    assert decide(one_off, korean, DecisionSettings(sentence_slack=0)).reason == NOT_A_SENTENCE
    assert decide(one_off, korean, DecisionSettings(sentence_slack=1)).reason != NOT_A_SENTENCE
    two_off = heard("부엌", "불", "좀", "좀", "꺼", "꺼", "줘")
    assert decide(two_off, korean, DecisionSettings(sentence_slack=1)).reason == NOT_A_SENTENCE


def test_typed_text_and_word_grammars_skip_the_sentence_rule(
    korean: IntentClassifier, classifier: IntentClassifier
) -> None:
    # A Hermes query is typed, not grammar-forced; the English grammar is a word list.
    typed = decide(text_transcript("부엌 불 좀 꺼 줘요"), korean, DecisionSettings())
    assert typed.reason != NOT_A_SENTENCE and typed.classification is not None
    assert classifier.sentences == frozenset()
    spoken = decide(
        heard("please", "turn", "on", "the", "kitchen", "light"), classifier, DecisionSettings()
    )
    assert spoken.intent == "LightOn"


def test_a_word_heard_with_low_confidence_rejects(korean: IntentClassifier) -> None:
    settings = DecisionSettings(min_word_confidence=0.6)
    unsure = heard("부엌", "불", "꺼", "줘", conf=0.5)
    decision = decide(unsure, korean, settings)
    assert decision.reason == LOW_WORD_CONFIDENCE and decision.classification is None
    assert decide(unsure, korean, DecisionSettings()).intent == "LightOff"
    sure = heard("부엌", "불", "꺼", "줘", conf=0.6)
    assert decide(sure, korean, settings).intent == "LightOff"


def test_sentence_distance_counts_words_inserted_dropped_or_replaced() -> None:
    sentences = [("a", "b", "c"), ("x", "y")]
    assert sentence_distance(("a", "b", "c"), sentences) == 0
    assert sentence_distance(("a", "c"), sentences) == 1
    assert sentence_distance(("a", "z", "c"), sentences) == 1
    assert sentence_distance(("q", "a", "b", "c", "q"), sentences) == 2
    assert sentence_distance(("a",), []) > 100
