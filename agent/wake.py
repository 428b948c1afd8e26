"""The optional wake phrase: only speech that follows it is taken as a command.

The phrase is spotted by Vosk itself (the daemon adds its words to the grammar), so no
extra model runs. Said together with a command ("hey pi, lights on") the rest of the
utterance is the command; said alone, it opens a window of ``window`` seconds of audio
within which the next utterance must end. Times are positions in the audio stream, not
the wall clock, so a file or a slow decoder behaves the same as a live microphone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from agent.featurize import normalize
from agent.recognizer import UNK, Transcript

__all__ = ["WakeGate", "WakeVerdict"]


@dataclass(frozen=True)
class WakeVerdict:
    """What the gate made of one transcript."""

    command: Transcript | None
    """The transcript to handle as a command (wake words removed), or None."""
    woke: bool = False
    """True when this transcript held the wake phrase."""


class WakeGate:
    """Admits transcripts that start with the wake phrase or end within its window.

    With an empty phrase every transcript is admitted. Not thread-safe: one per audio stream.
    """

    def __init__(self, phrase: str, window: float) -> None:
        self.words = tuple(normalize(phrase).split())
        self.window = window
        self._open_until = -math.inf

    @property
    def enabled(self) -> bool:
        return bool(self.words)

    def admit(self, transcript: Transcript, position: float) -> WakeVerdict:
        """Judge ``transcript``, which ended at ``position`` seconds into the audio stream."""
        if not self.words:
            return WakeVerdict(transcript)
        said = transcript.text.split()
        n = len(self.words)
        if tuple(said[:n]) == self.words:
            rest = _without_first(transcript, n)
            if rest is None:
                self._open_until = position + self.window
                return WakeVerdict(None, woke=True)
            self._open_until = -math.inf
            return WakeVerdict(rest, woke=True)
        if position <= self._open_until:
            self._open_until = -math.inf
            return WakeVerdict(transcript)
        return WakeVerdict(None)

    def grammar(self, grammar: tuple[str, ...]) -> tuple[str, ...]:
        """``grammar`` extended so that Vosk can hear the wake phrase, alone or before a
        command (a word grammar gets the words; a phrase grammar, the prefixed phrases)."""
        if not self.words:
            return grammar
        phrase = " ".join(self.words)
        if all(" " not in entry for entry in grammar):
            return (*grammar, *(w for w in self.words if w not in grammar))
        return (phrase, *grammar, *(f"{phrase} {entry}" for entry in grammar if entry != UNK))


def _without_first(transcript: Transcript, n: int) -> Transcript | None:
    """``transcript`` minus its first ``n`` recognized words; None when nothing else was said."""
    kept = []
    skipped = 0
    for word in transcript.words:
        if skipped < n and word.text != UNK:
            skipped += 1
            continue
        kept.append(word)
    rest = Transcript.from_words(
        tuple(kept),
        transcript.audio_seconds,
        transcript.decode_seconds,
        transcript.trailing_seconds,
    )
    return rest if rest.text else None
