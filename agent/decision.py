"""Accept or reject one utterance: the transcript's quality first, then the classifier's verdict.

An utterance becomes a command only when Vosk heard mostly grammar words (a grammar-bound
recognizer maps everything it hears onto the grammar, so ``[unk]`` is the signal that the
speech was something else), the classifier's confidence clears the model's calibrated
threshold, and every slot the intent needs is present. Everything else is "not recognized",
with the reason kept for the log and for Hermes consumers.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.classifier import Classification, IntentClassifier
from agent.recognizer import Transcript

__all__ = ["Decision", "decide"]

NO_WORDS = "no_words"
"""Reason: the recognizer heard only ``[unk]`` (or nothing usable)."""
UNKNOWN_WORDS = "unknown_words"
"""Reason: more than the allowed share of the words were off-grammar (``[unk]``)."""


@dataclass(frozen=True)
class Decision:
    """What became of one utterance."""

    transcript: Transcript
    classification: Classification | None
    """None when the transcript was dropped before classification."""
    reason: str = ""
    """Empty when accepted; else ``no_words``, ``unknown_words`` or the classifier's reason."""

    @property
    def accepted(self) -> bool:
        return not self.reason

    @property
    def intent(self) -> str | None:
        """The accepted intent's name, or None."""
        return self.classification.intent if self.classification is not None else None


def decide(transcript: Transcript, classifier: IntentClassifier, max_unk_ratio: float) -> Decision:
    """The verdict on ``transcript``: see the module docstring for the rules, in order."""
    if not transcript.text:
        return Decision(transcript, None, NO_WORDS)
    if transcript.unk_ratio > max_unk_ratio:
        return Decision(transcript, None, UNKNOWN_WORDS)
    classification = classifier.classify(transcript.text)
    return Decision(transcript, classification, classification.reason)
