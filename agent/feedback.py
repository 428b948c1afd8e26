"""Feedback sounds: a short tone on the wake phrase, on a command and on speech not recognized.

The WAVs are read once at start (``[feedback]`` paths, or the three that ship in
``agent/sounds``), converted to the output device's rate, and kept in memory. The daemon's
calls only hand a sound to a playback thread and return: opening an output stream can take
milliseconds, and the audio loop must not wait for a speaker. An output error is logged
once and turns feedback off; it never stops the agent.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import struct
import threading
import wave
from contextlib import ExitStack
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from agent.audio import AudioError, PortAudio, open_wav
from agent.errors import UsageError

if TYPE_CHECKING:
    # agent.config checks the configured WAVs with read_sound, so it imports this module.
    from agent.config import Config, FeedbackConfig

__all__ = [
    "CUES",
    "Feedback",
    "FeedbackError",
    "Sound",
    "default_sound",
    "read_sound",
    "start_feedback",
]

log = logging.getLogger(__name__)

CUES: Final = ("wake", "accepted", "rejected")
"""The moments that have a sound, as named in ``[feedback]``."""
MAX_SECONDS: Final = 5.0
"""A cue longer than this is a mistake (a song, not a beep): refused at start."""
_STOP: Final = object()


class FeedbackError(UsageError):
    """A feedback sound that cannot be used; ``str()`` names the key and the file."""


@dataclass(frozen=True)
class Sound:
    """One cue in memory: 16-bit samples, frames × channels."""

    samples: np.ndarray
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.samples) / self.rate

    def resampled(self, rate: int) -> Sound:
        """The sound at ``rate`` Hz (linear interpolation: plenty for a beep)."""
        if rate == self.rate:
            return self
        frames = max(1, round(len(self.samples) * rate / self.rate))
        at = np.linspace(0, len(self.samples) - 1, frames)
        channels = [
            np.interp(at, np.arange(len(self.samples)), self.samples[:, c])
            for c in range(self.samples.shape[1])
        ]
        return Sound(np.round(np.stack(channels, axis=1)).astype(np.int16), rate)


def default_sound(cue: str) -> Path:
    """The shipped WAV for ``cue`` (one of :data:`CUES`)."""
    return Path(str(files("agent") / "sounds" / f"{cue}.wav"))


def read_sound(path: Path) -> Sound:
    """Read a 16-bit PCM WAV (mono or stereo, 8 to 192 kHz); :class:`FeedbackError` (``PATH:
    problem``, worded as :func:`agent.audio.open_wav` words it) otherwise."""
    try:
        with open_wav(path) as wav:
            channels, rate = wav.getnchannels(), wav.getframerate()
            data = wav.readframes(wav.getnframes())
    except AudioError as err:
        raise FeedbackError(str(err)) from None
    except (OSError, EOFError, wave.Error, RuntimeError, struct.error, ValueError):
        # The header was fine but the data chunk is not (wave reads it lazily).
        raise FeedbackError(f"{path}: not a valid WAV file (malformed data chunk)") from None
    frame = 2 * channels
    # A data chunk that is not a whole number of frames ends in a partial one: drop it.
    samples = np.frombuffer(data[: len(data) - len(data) % frame], dtype="<i2")
    samples = samples.reshape(-1, channels)
    if not len(samples):
        raise FeedbackError(f"{path}: no audio in it")
    sound = Sound(samples, rate)
    if sound.seconds > MAX_SECONDS:
        raise FeedbackError(
            f"{path}: {sound.seconds:.1f} s long (a cue is at most {MAX_SECONDS:g} s)"
        )
    return sound


class Feedback:
    """Plays the cues on a thread of its own; :meth:`wake`, :meth:`accepted` and
    :meth:`rejected` return at once (the :class:`agent.daemon.Cues` protocol)."""

    def __init__(
        self,
        sounds: dict[str, Sound],
        device: str | int | None = None,
        portaudio: PortAudio | None = None,
    ) -> None:
        self.sounds = sounds
        self.device = device
        self.portaudio = portaudio or PortAudio()
        """Shared with the microphone, which may initialize PortAudio again (a replug)."""
        self._configured = device
        self._generation = 0
        self.enabled = True
        self.played = 0
        # One waiting cue is enough: a newer one is dropped rather than played late.
        self._queue: queue.Queue[object] = queue.Queue(maxsize=1)
        self._thread: threading.Thread | None = None

    @classmethod
    def load(
        cls, config: FeedbackConfig, source: str = "", portaudio: PortAudio | None = None
    ) -> Feedback:
        """Read every cue's WAV (the configured one or the shipped one); FeedbackError naming
        ``source`` (the configuration file) and the key if one is unusable."""
        sounds = {}
        for cue in CUES:
            path = getattr(config, cue)
            try:
                sounds[cue] = read_sound(path or default_sound(cue))
            except FeedbackError as err:
                where = f"{source}: " if source else ""
                raise FeedbackError(f"{where}feedback.{cue}: {err}") from None
        return cls(sounds, config.device, portaudio)

    def start(self) -> None:
        """Open PortAudio, fit the sounds to the output device and start the playback thread;
        a missing library or device turns feedback off with one warning."""
        try:
            sd = self.portaudio.sd
            self._generation = self.portaudio.generation
            info = sd.query_devices(self.device, "output")
        except Exception as err:  # ImportError, OSError (no PortAudio), PortAudioError, ValueError
            self._disable(f"no output device ({_one_line(err)})")
            return
        rate = int(info["default_samplerate"])
        self.sounds = {cue: sound.resampled(rate) for cue, sound in self.sounds.items()}
        self.device = int(info["index"])
        self._thread = threading.Thread(target=self._run, name="feedback", daemon=True)
        self._thread.start()
        log.info("feedback sounds on %s (%d Hz)", info["name"], rate)

    def wake(self) -> None:
        self._cue("wake")

    def accepted(self) -> None:
        self._cue("accepted")

    def rejected(self) -> None:
        self._cue("rejected")

    def _cue(self, cue: str) -> None:
        if self.enabled and self._thread is not None:
            with contextlib.suppress(queue.Full):
                self._queue.put_nowait(cue)

    def close(self, timeout: float = 5.0) -> None:
        """Let a cue that is playing or waiting finish, then stop the thread."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        with contextlib.suppress(queue.Full):
            self._queue.put(_STOP, timeout=timeout)
        thread.join(timeout)

    def _disable(self, why: str) -> None:
        if self.enabled:
            self.enabled = False
            log.warning("feedback sounds off: %s", why)

    def _run(self) -> None:
        while (cue := self._queue.get()) is not _STOP:
            if not self.enabled:
                continue
            sound = self.sounds[str(cue)]
            # Not while the microphone initializes PortAudio again: that closes our stream.
            with self.portaudio.lock:
                if self.portaudio.generation != self._generation and not self._find_device():
                    continue
                try:
                    sd = self.portaudio.sd
                    sd.play(sound.samples, sound.rate, device=self.device, blocking=True)
                except Exception as err:  # PortAudio's errors have no common base worth naming
                    self._disable(f"cannot play on output device {self.device}: {_one_line(err)}")
                else:
                    self.played += 1

    def _find_device(self) -> bool:
        """After PortAudio was initialized again, its devices may have new indexes: look the
        configured one up again. False (and the cue skipped) while it is missing; the next
        cue looks again."""
        try:
            info = self.portaudio.sd.query_devices(self._configured, "output")
        except Exception as err:
            log.debug("feedback: output device %s not found: %s", self._configured, err)
            return False
        self.device = int(info["index"])
        self._generation = self.portaudio.generation
        return True


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def start_feedback(
    config: Config, stack: ExitStack, portaudio: PortAudio | None = None
) -> Feedback | None:
    """The running :class:`Feedback` when ``[feedback] enabled``, else None; ``stack`` closes
    it. A bad WAV raises :class:`FeedbackError` (exit status 2)."""
    if not config.feedback.enabled:
        return None
    feedback = Feedback.load(config.feedback, config.source, portaudio)
    feedback.start()
    stack.callback(feedback.close)
    return feedback
