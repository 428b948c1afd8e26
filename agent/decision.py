"""Accept or reject one utterance: the transcript's quality first, then the classifier's verdict.

A grammar-bound recognizer maps everything it hears onto the grammar's words, so ordinary
speech in the room (a conversation, the TV) comes out as word salads made of command words.
An utterance becomes a command only when Vosk heard mostly grammar words (``[unk]`` is the
signal that the speech was something else), every word was heard with enough confidence,
the words are one sentence of the model's spec (within a stated slack), the classifier's
confidence clears the model's calibrated threshold, and every slot the intent needs is
present. Everything else is "not recognized", with the reason kept for the log and for
Hermes consumers. Typed text (a Hermes query: no recognizer words) skips the speech rules.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from agent.classifier import Classification, IntentClassifier
from agent.featurize import normalize
from agent.recognizer import UNK, Transcript

__all__ = ["Decision", "DecisionSettings", "decide", "sentence_distance"]

NO_WORDS = "no_words"
"""Reason: the recognizer heard only ``[unk]`` (or nothing usable)."""
UNKNOWN_WORDS = "unknown_words"
"""Reason: more than the allowed share of the words were off-grammar (``[unk]``)."""
LOW_WORD_CONFIDENCE = "low_word_confidence"
"""Reason: some word was heard with less than the minimum confidence."""
NOT_A_SENTENCE = "not_a_sentence"
"""Reason: the words are not one sentence of the spec (nor within the allowed slack)."""


@dataclass(frozen=True)
class DecisionSettings:
    """The rules an utterance must pass before (and beside) the classifier's verdict."""

    max_unk_ratio: float = 0.5
    """Drop an utterance when more than this share of its words is ``[unk]``."""
    sentence_slack: int = 0
    """Accept spoken words only when they are one sentence of the model's grammar or differ
    from one by at most this many words (inserted, dropped or replaced); -1: any words."""
    min_word_confidence: float = 0.0
    """Drop an utterance when any of its words was heard with less confidence (0: off)."""


@dataclass(frozen=True)
class Decision:
    """What became of one utterance."""

    transcript: Transcript
    classification: Classification | None
    """None when the transcript was dropped before classification."""
    reason: str = ""
    """Empty when accepted; else ``no_words``, ``unknown_words``, ``low_word_confidence``,
    ``not_a_sentence`` or the classifier's reason."""

    @property
    def accepted(self) -> bool:
        return not self.reason

    @property
    def intent(self) -> str | None:
        """The accepted intent's name, or None."""
        return self.classification.intent if self.classification is not None else None


def sentence_distance(words: tuple[str, ...], sentences: Iterable[tuple[str, ...]]) -> int:
    """The fewest words inserted, dropped or replaced that turn ``words`` into one of
    ``sentences`` (Levenshtein over words); a large number when there are none."""
    best = 1 << 30
    for sentence in sentences:
        if abs(len(sentence) - len(words)) >= best:
            continue
        previous = list(range(len(sentence) + 1))
        for i, word in enumerate(words, 1):
            current = [i]
            for j, other in enumerate(sentence, 1):
                current.append(
                    min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other))
                )
            previous = current
        best = min(best, previous[-1])
        if best == 0:
            break
    return best


def decide(
    transcript: Transcript, classifier: IntentClassifier, settings: DecisionSettings
) -> Decision:
    """The verdict on ``transcript``: see the module docstring for the rules, in order."""
    if not transcript.text:
        return Decision(transcript, None, NO_WORDS)
    if transcript.unk_ratio > settings.max_unk_ratio:
        return Decision(transcript, None, UNKNOWN_WORDS)
    # Typed text has no recognizer words: the speech rules do not apply to it.
    spoken = [w for w in transcript.words if w.text != UNK]
    if spoken and min(w.conf for w in spoken) < settings.min_word_confidence:
        return Decision(transcript, None, LOW_WORD_CONFIDENCE)
    sentences = classifier.sentences
    if spoken and settings.sentence_slack >= 0 and sentences:
        words = tuple(normalize(transcript.text).split())
        if words not in sentences and (
            settings.sentence_slack == 0
            or sentence_distance(words, sentences) > settings.sentence_slack
        ):
            return Decision(transcript, None, NOT_A_SENTENCE)
    classification = classifier.classify(transcript.text)
    return Decision(transcript, classification, classification.reason)
