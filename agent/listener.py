"""The listening loop's ear: wake word, then one command's audio, then the wake word again.

Every chunk from the source is resampled to 16 kHz and run through the wake word models;
that is all the Pi does while nobody says the wake word (the speech recognizer is not fed).
After a detection the command's audio is handed on, starting a little before the
detection (``preroll``): the models fire 0.1 to 0.2 s after the wake word ends, so a
command said in the same breath has begun by then. The pre-roll starts at its quietest
10 ms, the gap between the wake word and the command, so the wake word's own end is not
decoded as a command word. The command ends at a pause (``end_silence`` of no speech by
pymicro-vad, once speech was heard after the wake word), when the recognizer finds its end
(:meth:`Listener.end_command`), at ``command_timeout`` or at the end of the stream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from agent.audio import AudioChunk, EndOfStream, Item
from agent.resample import RATE, Resampler
from agent.vad import FRAME_BYTES, VoiceActivity
from agent.wakeword import Detection, WakeWordDetector

__all__ = [
    "CommandAudio",
    "CommandEnd",
    "Event",
    "Listener",
    "ListenerSettings",
    "Woke",
]

FRAME: Final = FRAME_BYTES // 2
"""Samples per 10 ms frame at 16 kHz."""
VAD_WARMUP: Final = 0.8
"""Seconds of audio before the command fed to the voice activity detector, which gives no
answer for its first 0.75 s."""
ONSET: Final = 4.0
"""A frame this many times louder than the quietest of the pre-roll (12 dB) starts the
command's speech; the recognizer is fed from a little before it, not the pause before it:
Vosk's adaptation to the start of an utterance decodes worse after a long silence."""
ONSET_FLOOR: Final = 60.0
"""The least RMS (of 32768) that can start speech, for a pre-roll of digital silence."""
ONSET_MARGIN: Final = 0.15
"""Seconds fed before the onset: a word's soft start is quieter than the threshold."""
VAD_SETTLE: Final = 0.8
"""Seconds after the detection during which "speech" may be the wake word's own echo in the
voice activity detector (the model fires 0.1-0.2 s after the word, and the detector holds
on for 0.6-0.7 s after speech; at 0.5 a pause after the wake word ended the command before
it was said): only speech after that proves the command has begun."""


@dataclass(frozen=True)
class ListenerSettings:
    """The ``[wake]`` keys of the listening loop (see DEFAULT_TOML)."""

    preroll: float = 0.3
    end_silence: float = 0.3
    command_timeout: float = 8.0


@dataclass(frozen=True)
class Woke:
    """The wake word was heard; the command's audio follows."""

    detection: Detection


@dataclass(frozen=True)
class CommandAudio:
    """A piece of the command's audio (16 kHz mono), for the speech recognizer."""

    chunk: AudioChunk


@dataclass(frozen=True)
class CommandEnd:
    """The command is over; ``reason``: "pause", "timeout" or "end of stream"."""

    reason: str


Event = Woke | CommandAudio | CommandEnd


@dataclass
class _Command:
    """The command in progress (mutable, owned by the listener)."""

    detection: int
    """Sample index of the detection."""
    deadline: int
    next_frame: int
    """Sample index where the next voice activity frame starts."""
    start: int
    """Sample index where the command's audio may start (the pre-roll's quietest frame)."""
    loud: float
    """RMS above which a frame is the command's speech."""
    feeding: int | None = None
    """Sample index up to which audio went to the recognizer, once speech began."""
    heard: bool = False
    quiet_frames: int = 0


class Listener:
    """Turns source items into :data:`Event` s. Not thread-safe: one per audio stream."""

    def __init__(
        self,
        detector: WakeWordDetector,
        settings: ListenerSettings,
        vad: VoiceActivity | None = None,
    ) -> None:
        self.detector = detector
        self.settings = settings
        self.vad = vad or VoiceActivity()
        self._resampler = Resampler()
        keep = settings.preroll + VAD_WARMUP + 0.5
        self._history_samples = int(keep * RATE)
        self._history = np.zeros(0, dtype="<i2")
        self._samples = 0
        """16 kHz samples taken so far; the history ends here."""
        self._command: _Command | None = None

    @property
    def in_command(self) -> bool:
        """True between a wake word and the end of its command."""
        return self._command is not None

    def push(self, item: Item) -> list[Event]:
        """What ``item`` leads to, in order."""
        if isinstance(item, EndOfStream):
            events = self._take(self._resampler.flush())
            if self._command is not None:
                self._command = None
                events.append(CommandEnd("end of stream"))
            return events
        return self._take(self._resampler.process(item))

    def end_command(self) -> None:
        """The recognizer found the command's end itself: listen for the wake word again."""
        self._command = None

    def _take(self, pcm: bytes) -> list[Event]:
        if not pcm:
            return []
        first = self._samples
        samples = np.frombuffer(pcm, dtype="<i2")
        detection = self.detector.process(AudioChunk(pcm, RATE))
        self._history = np.concatenate((self._history, samples))[-self._history_samples :]
        self._samples += len(samples)
        events: list[Event] = []
        if self._command is None:
            if detection is None:
                return events
            start = self._begin(detection)
            events.append(Woke(detection))
        else:
            start = first
        return events + self._follow(start)

    def _begin(self, detection: Detection) -> int:
        """Start a command at ``detection``; the sample index its audio starts at."""
        at = min(round(detection.position * RATE), self._samples)
        start, floor = self._quietest(at)
        warm_from = max(start - int(VAD_WARMUP * RATE), self._samples - len(self._history))
        warm_from = start - (start - warm_from) // FRAME * FRAME
        self.vad.reset()
        self.vad.process(self._slice(warm_from, start).tobytes())
        self._command = _Command(
            detection=at,
            deadline=at + int(self.settings.command_timeout * RATE),
            next_frame=start,
            start=start,
            loud=max(floor * ONSET, ONSET_FLOOR),
        )
        return start

    def _quietest(self, at: int) -> tuple[int, float]:
        """The start of the quietest 10 ms frame within ``preroll`` before ``at`` (the latest
        of those nearly as quiet; ``at`` without a pre-roll) and its RMS."""
        preroll = max(self.settings.preroll, 0.1)  # the level is taken even without one
        frames = min(int(preroll * RATE), at - (self._samples - len(self._history))) // FRAME
        if frames <= 0:
            return at, 0.0
        energy = _rms(self._slice(at - frames * FRAME, at))
        quiet = np.nonzero(energy <= energy.min() * 2 + 1.0)[0]
        start = at - (frames - int(quiet[-1])) * FRAME
        return (start if self.settings.preroll > 0 else at), float(energy.min())

    def _slice(self, start: int, end: int) -> np.ndarray:
        """Samples ``start`` to ``end`` (stream indexes) from the history."""
        origin = self._samples - len(self._history)
        return self._history[max(start, origin) - origin : end - origin]

    def _follow(self, start: int) -> list[Event]:
        """The command's audio from ``start`` to now, cut at its end if that came."""
        command = self._command
        assert command is not None
        audio = self._slice(start, self._samples)
        end = self._end(command, audio)
        stop = self._samples if end is None else end[0]
        events: list[Event] = []
        if command.feeding is None:
            loud = np.nonzero(_rms(self._slice(start, stop)) > command.loud)[0]
            if len(loud):
                onset = start + int(loud[0]) * FRAME - int(ONSET_MARGIN * RATE)
                command.feeding = max(onset, command.start)
        if command.feeding is not None and stop > command.feeding:
            pcm = self._slice(command.feeding, stop).tobytes()
            command.feeding = stop
            events.append(CommandAudio(AudioChunk(pcm, RATE)))
        if end is not None:
            self._command = None
            self.vad.reset()
            events.append(CommandEnd(end[1]))
        return events

    def _end(self, command: _Command, audio: np.ndarray) -> tuple[int, str] | None:
        """Where in ``audio`` (which continues the command) it ends, and why; None if not."""
        end: int | None = None
        reason = ""
        for flag in self.vad.process(audio.tobytes()):
            frame_end = command.next_frame + FRAME
            command.next_frame = frame_end
            if flag and frame_end >= command.detection + int(VAD_SETTLE * RATE):
                command.heard = True
            if command.heard:
                command.quiet_frames = 0 if flag else command.quiet_frames + 1
                if command.quiet_frames * FRAME >= self.settings.end_silence * RATE:
                    end, reason = frame_end, "pause"
                    break
            if frame_end >= command.deadline:
                end, reason = frame_end, "timeout"
                break
        return None if end is None else (end, reason)


def _rms(samples: np.ndarray) -> np.ndarray:
    """The RMS of each whole 10 ms frame of ``samples``."""
    frames = len(samples) // FRAME
    window = samples[: frames * FRAME].astype(np.float32).reshape(frames, FRAME)
    return np.sqrt(np.mean(window * window, axis=1))
