"""Audio sources: WAV files, a folder of WAVs, raw PCM on stdin and a microphone.

Every source yields :class:`AudioChunk` (16-bit little-endian PCM, mono after downmixing)
and ends each utterance with :data:`END_OF_STREAM`, so the recognizer never needs to know
where the audio came from. Vosk accepts any sample rate, so nothing is resampled.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import struct
import sys
import threading
import time
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final

import numpy as np

__all__ = [
    "END_OF_STREAM",
    "AudioChunk",
    "AudioError",
    "EndOfStream",
    "InputDevice",
    "Item",
    "find_input_device",
    "list_input_devices",
    "microphone_source",
    "stdin_source",
    "to_mono",
    "wav_folder_source",
    "wav_source",
]

SAMPLE_WIDTH: Final = 2
"""Bytes per sample: every source produces 16-bit PCM."""
CHUNK_FRAMES: Final = 4000
"""Frames per chunk read from files and streams (a quarter second at 16 kHz)."""
MIN_RATE: Final = 8000
MAX_RATE: Final = 192000
"""Sample rates a file or stream may have: Kaldi's resampler aborts the whole process on
absurd rates (2**32 - 1 Hz) and crawls on tiny ones (1 Hz is 16,000-fold upsampling)."""
_FMT_READ: Final = 40
"""Bytes of a ``fmt `` chunk that hold every field we look at; a header that claims more is
not read further (a lying size must not make us read gigabytes)."""
_WAVE_FORMAT_PCM: Final = 1
_WAVE_FORMAT_EXTENSIBLE: Final = 0xFFFE
log = logging.getLogger(__name__)

_FORMAT_NAMES: Final = {3: "32-bit float", 6: "A-law", 7: "µ-law", 0x11: "IMA ADPCM", 0x55: "MP3"}


class AudioError(Exception):
    """Unusable audio input; ``str()`` is one line naming the file or device and the cause."""

    def __str__(self) -> str:
        # A file or device name may hold a line break or bytes that are not UTF-8: escape
        # them, so the message stays one printable line.
        text = super().__str__()
        return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


@dataclass(frozen=True)
class AudioChunk:
    """A block of 16-bit little-endian mono PCM at ``rate`` Hz."""

    pcm: bytes
    rate: int
    channels: int = 1
    """Channels of the source before downmixing (``pcm`` itself is always mono)."""

    @property
    def seconds(self) -> float:
        """Duration of the chunk."""
        return len(self.pcm) / (SAMPLE_WIDTH * self.rate)


@dataclass(frozen=True)
class EndOfStream:
    """Marks the end of an utterance (a file, a stream): the recognizer should finish."""

    source: str = ""


END_OF_STREAM: Final = EndOfStream()

Item = AudioChunk | EndOfStream
"""What a source yields."""


@dataclass(frozen=True)
class InputDevice:
    """A sound input device as PortAudio reports it."""

    index: int
    name: str
    channels: int
    default_rate: int
    is_default: bool


def to_mono(pcm: bytes, channels: int) -> bytes:
    """Average interleaved 16-bit frames of ``channels`` channels into mono 16-bit PCM."""
    if channels == 1:
        return pcm
    frames = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels)
    # Sum in int32 so that two full-scale channels do not overflow before the division.
    mixed = frames.sum(axis=1, dtype=np.int32) // channels
    return mixed.astype("<i2").tobytes()


@dataclass(frozen=True)
class _Format:
    """The fields of a WAV ``fmt `` chunk that decide whether we can read it."""

    tag: int
    channels: int
    bits: int


def _read_format(path: Path) -> _Format | None:
    """The ``fmt `` chunk (resolving WAVE_FORMAT_EXTENSIBLE), or None if there is none.

    :mod:`wave` rejects non-PCM files with a bare "unknown format: 3"; this names the cause.
    """
    try:
        with path.open("rb") as f:
            header = f.read(12)
            if len(header) < 12 or header[:4] != b"RIFF" or header[8:12] != b"WAVE":
                return None
            while True:
                chunk = f.read(8)
                if len(chunk) < 8:
                    return None
                name, size = chunk[:4], struct.unpack("<I", chunk[4:])[0]
                if name == b"fmt ":
                    body = f.read(min(size, _FMT_READ))
                    if len(body) < 16:
                        return None
                    tag, channels = struct.unpack("<HH", body[:4])
                    bits = struct.unpack("<H", body[14:16])[0]
                    if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
                        tag = struct.unpack("<H", body[24:26])[0]
                    return _Format(int(tag), int(channels), int(bits))
                f.seek(size + (size & 1), 1)
    except OSError:
        return None


def _unknown_format(path: Path) -> AudioError:
    """The error for a file that :mod:`wave` refuses as an unknown format."""
    fmt = _read_format(path)
    if fmt is None:
        return AudioError(f"{path}: not a valid WAV file (no readable fmt chunk)")
    if fmt.tag != _WAVE_FORMAT_PCM:
        name = _FORMAT_NAMES.get(fmt.tag, f"format tag {fmt.tag}")
        return AudioError(f"{path}: not a 16-bit PCM WAV file ({name})")
    if fmt.bits != 16:
        width = (fmt.bits + 7) // 8
        unit = "byte" if width == 1 else "bytes"
        return AudioError(f"{path}: not a 16-bit PCM WAV file (sample width {width} {unit})")
    if fmt.channels not in (1, 2):
        return AudioError(f"{path}: expected mono or stereo, got {fmt.channels} channels")
    return AudioError(
        f"{path}: unsupported WAV header (WAVE_FORMAT_EXTENSIBLE); rewrite it"
        " as plain PCM, e.g. sox in.wav -b 16 out.wav"
    )


def open_wav(path: Path) -> wave.Wave_read:
    """Open ``path`` as a 16-bit PCM mono or stereo WAV, or raise a one-line AudioError.

    Shared by the WAV source and the feedback cues, so both name a bad file the same way.
    """
    try:
        size = path.stat().st_size
    except OSError as err:
        raise AudioError(f"{path}: cannot read: {err.strerror or err}") from None
    if size == 0:
        raise AudioError(f"{path}: not a WAV file (empty file)")
    try:
        wav = wave.open(str(path), "rb")  # noqa: SIM115 - returned open; the caller closes it
    except wave.Error as err:
        message = str(err)
        if message.startswith("unknown format"):
            raise _unknown_format(path) from None
        if "RIFF" in message or "WAVE" in message:
            raise AudioError(f"{path}: not a WAV file (no RIFF/WAVE header)") from None
        raise AudioError(f"{path}: not a valid WAV file ({message})") from None
    except EOFError:
        raise AudioError(f"{path}: truncated WAV file (header ends early)") from None
    except OSError as err:
        raise AudioError(f"{path}: cannot read: {err.strerror or err}") from None
    except (RuntimeError, struct.error, ValueError, OverflowError):
        # wave's chunk reader raises a bare RuntimeError for a chunk shorter than its fields.
        raise AudioError(f"{path}: not a valid WAV file (malformed chunk)") from None
    width, channels = wav.getsampwidth(), wav.getnchannels()
    if width != SAMPLE_WIDTH:
        wav.close()
        unit = "byte" if width == 1 else "bytes"
        raise AudioError(f"{path}: not a 16-bit PCM WAV file (sample width {width} {unit})")
    if channels not in (1, 2):
        wav.close()
        raise AudioError(f"{path}: expected mono or stereo, got {channels} channels")
    if not MIN_RATE <= wav.getframerate() <= MAX_RATE:
        wav.close()
        raise AudioError(
            f"{path}: unsupported sample rate {wav.getframerate()} Hz"
            f" (expected {MIN_RATE} to {MAX_RATE})"
        )
    return wav


def wav_source(path: str | Path, chunk_frames: int = CHUNK_FRAMES) -> Iterator[Item]:
    """Yield the chunks of one WAV file (16-bit mono or stereo, 8 to 192 kHz), then END_OF_STREAM.

    The file is validated before the first chunk, so a bad file fails before any audio flows.
    """
    path = Path(path)
    wav = open_wav(path)
    with wav:
        rate, channels = wav.getframerate(), wav.getnchannels()
        frame = channels * SAMPLE_WIDTH
        expected = wav.getnframes() * frame
        read = 0
        while True:
            pcm = wav.readframes(chunk_frames)
            if not pcm:
                break
            read += len(pcm)
            # A data chunk whose size is not a whole number of frames ends in a partial one.
            whole = len(pcm) - len(pcm) % frame
            if whole:
                yield AudioChunk(to_mono(pcm[:whole], channels), rate, channels)
    if read < expected:
        raise AudioError(f"{path}: truncated WAV file (data ends after {read} of {expected} bytes)")
    yield EndOfStream(str(path))


def wav_folder_source(directory: str | Path, chunk_frames: int = CHUNK_FRAMES) -> Iterator[Item]:
    """Yield every ``*.wav`` in ``directory`` in sorted order, one utterance per file."""
    directory = Path(directory)
    if not directory.is_dir():
        raise AudioError(f"{directory}: not a directory")
    for path in sorted(directory.glob("*.wav")):
        yield from wav_source(path, chunk_frames)


def stdin_source(
    rate: int,
    channels: int = 1,
    stream: BinaryIO | None = None,
    chunk_frames: int | None = None,
) -> Iterator[Item]:
    """Yield raw little-endian 16-bit PCM read from ``stream`` (default: binary stdin).

    A live stream is passed on as it arrives (at most ``chunk_frames`` at a time, default
    50 ms' worth), never held back to fill a chunk: the end of an utterance must reach the
    recognizer at once.
    """
    if not MIN_RATE <= rate <= MAX_RATE or channels not in (1, 2):
        raise AudioError(
            f"<stdin>: need a rate from {MIN_RATE} to {MAX_RATE} Hz and 1 or 2 channels,"
            f" got {rate}, {channels}"
        )
    source = stream if stream is not None else sys.stdin.buffer
    frame = SAMPLE_WIDTH * channels
    size = (chunk_frames or max(1, rate // 20)) * frame
    # read1 returns what the pipe has (blocking only while it has nothing); read would
    # wait for a whole chunk.
    read = getattr(source, "read1", source.read)
    tail = b""
    while True:
        data = read(size)
        if not data:
            break
        if tail:
            data = tail + data
        # A pipe may return a partial frame; keep it for the next read.
        cut = len(data) - len(data) % frame
        tail = data[cut:]
        if cut:
            yield AudioChunk(to_mono(data[:cut], channels), rate, channels)
    yield EndOfStream("<stdin>")


def _sounddevice() -> Any:
    """Import sounddevice lazily: it loads PortAudio, which a headless test box may lack."""
    try:
        import sounddevice
    except (ImportError, OSError) as err:
        raise AudioError(f"microphone: sounddevice is unavailable: {err}") from None
    return sounddevice


class PortAudio:
    """The process's PortAudio, shared by the microphone and the feedback sounds.

    PortAudio lists devices once, when initialized, so the microphone initializes it again to
    see a replugged device; that closes every stream of the process, a sound being played
    included. ``lock`` keeps the two apart, and ``generation`` counts re-initializations so
    that the player knows its device index may now name another device. sounddevice (which
    loads the PortAudio library) is imported on first use.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.generation = 0
        self._sd: Any = None

    @property
    def sd(self) -> Any:
        """The sounddevice module; AudioError when it or PortAudio is missing."""
        if self._sd is None:
            self._sd = _sounddevice()
        return self._sd

    def reinitialize(self) -> None:
        """Terminate and initialize PortAudio, once no sound is playing."""
        sd = self.sd
        with self.lock:
            self.generation += 1
            with contextlib.suppress(Exception):
                sd._terminate()
            try:
                sd._initialize()
            except Exception as err:
                raise AudioError(f"microphone: cannot initialize PortAudio again: {err}") from None


def list_input_devices() -> list[InputDevice]:
    """All devices with at least one input channel."""
    sd = _sounddevice()
    try:
        default_in = sd.default.device[0]
        devices = sd.query_devices()
    except Exception as err:  # PortAudio raises its own error types
        raise AudioError(f"microphone: cannot list devices: {err}") from None
    return [
        InputDevice(
            index=int(d["index"]),
            name=str(d["name"]),
            channels=int(d["max_input_channels"]),
            default_rate=int(d["default_samplerate"]),
            is_default=int(d["index"]) == default_in,
        )
        for d in devices
        if d["max_input_channels"] > 0
    ]


def find_input_device(device: str | int | None) -> InputDevice:
    """The input device by index, by case-insensitive name substring, or the default one."""
    devices = list_input_devices()
    if not devices:
        raise AudioError("microphone: no input devices found")
    if device is None:
        return next((d for d in devices if d.is_default), devices[0])
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        index = int(device)
        for d in devices:
            if d.index == index:
                return d
        raise AudioError(f"microphone: no input device with index {index}")
    wanted = device.lower()
    matches = [d for d in devices if d.name.lower() == wanted] or [
        d for d in devices if wanted in d.name.lower()
    ]
    if len(matches) != 1:
        names = ", ".join(f"{d.index}: {d.name}" for d in (matches or devices))
        problem = "is ambiguous" if matches else "matches no input device"
        raise AudioError(f"microphone: '{device}' {problem} ({names})")
    return matches[0]


MIC_POLL: Final = 1.0
"""Seconds the microphone source waits for a block before it hands the consumer an empty
:class:`EndOfStream` (so the audio loop keeps turning while the device is silent or away)."""
MIC_RETRY_MIN: Final = 0.5
MIC_RETRY_MAX: Final = 5.0
"""Seconds between attempts to reopen a lost microphone: doubling from the first to this."""
MIC_AWAY_REMINDER: Final = 600.0
"""Seconds between the warnings that a lost microphone is still away (the rest is debug)."""


class _Microphone:
    """One open PortAudio input stream and the settings to open it again after a replug."""

    def __init__(
        self,
        portaudio: PortAudio,
        device: str | int | None,
        rate: int | None,
        channels: int | None,
        block_ms: int,
    ) -> None:
        self.portaudio = portaudio
        self.sd = portaudio.sd
        self.device = device
        """As configured (a name, an index or None): looked up again on every reopen."""
        self.rate = rate
        self.channels = channels
        self.block_ms = block_ms
        self.blocks: queue.Queue[bytes] = queue.Queue(maxsize=64)
        self.name = "default" if device is None else str(device)
        self.stream: Any = None
        self.open()

    def _callback(self, indata: Any, frames: int, time: Any, status: Any) -> None:
        # Dropping a block beats blocking PortAudio's real-time thread when we fall behind.
        with contextlib.suppress(queue.Full):
            self.blocks.put_nowait(bytes(indata))

    def open(self) -> None:
        """Find the device and start a stream on it, or raise a one-line AudioError."""
        info = find_input_device(self.device)
        rate = self.rate or info.default_rate
        channels = self.channels or min(info.channels, 2)
        if channels not in (1, 2):
            raise AudioError(f"microphone: {info.name}: need 1 or 2 channels, got {channels}")
        try:
            stream = self.sd.RawInputStream(
                samplerate=rate,
                blocksize=max(1, rate * self.block_ms // 1000),
                device=info.index,
                channels=channels,
                dtype="int16",
                callback=self._callback,
            )
        except Exception as err:  # PortAudio raises its own error types
            raise AudioError(f"microphone: {info.name}: cannot open: {err}") from None
        try:
            stream.start()
        except Exception as err:
            stream.close()
            raise AudioError(f"microphone: {info.name}: cannot start: {err}") from None
        self.stream, self.info = stream, info
        self.stream_rate, self.stream_channels = rate, channels
        self.name = info.name

    def close(self) -> None:
        """Close the stream (a vanished device's too) and forget its queued blocks."""
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream.close(ignore_errors=True)
        while not self.blocks.empty():
            self.blocks.get_nowait()

    def refresh(self) -> None:
        """Make PortAudio enumerate the devices again: it lists them once, at initialization,
        so a replugged USB microphone (with a new index) is invisible until it is restarted.
        Called with this stream closed; the feedback sounds wait (see :class:`PortAudio`)."""
        self.portaudio.reinitialize()


def microphone_source(
    device: str | int | None = None,
    rate: int | None = None,
    channels: int | None = None,
    block_ms: int = 50,
    stall_timeout: float = 10.0,
    portaudio: PortAudio | None = None,
) -> Iterator[Item]:
    """Yield chunks from an input device until the consumer stops iterating, riding out
    unplugged devices (``portaudio``: the one the feedback sounds use, if any).

    Rate and channel count default to the device's own (so no ALSA plug resampling);
    stereo devices are downmixed. The PortAudio callback only copies bytes into a queue.

    The device is opened before the first item, so a missing one fails at once, as an
    AudioError. After that the source never fails: when PortAudio reports the stream
    stopped (ALSA does, for an unplugged USB microphone) or no audio arrives for
    ``stall_timeout`` seconds, it closes the stream, yields END_OF_STREAM (ending the
    utterance in progress) and looks for the device again by its configured name or
    index, with backoff from MIC_RETRY_MIN to MIC_RETRY_MAX seconds, for as long as it
    takes. Whenever no audio comes for MIC_POLL seconds, and while the device is away, an
    END_OF_STREAM is yielded each MIC_POLL: the consumer's loop keeps turning (and feeds
    the watchdog: waiting for a device is not a hang) and the recognizer has nothing to
    finish. A call that hangs inside PortAudio yields nothing: that is the watchdog's case.
    """
    mic = _Microphone(portaudio or PortAudio(), device, rate, channels, block_ms)
    poll = min(MIC_POLL, stall_timeout)
    try:
        while True:
            why = yield from _stream_chunks(mic, poll, stall_timeout)
            log.warning("microphone %s: %s; closing it and looking for it again", mic.name, why)
            mic.close()
            yield END_OF_STREAM
            yield from _reopen(mic, poll)
    finally:
        mic.close()


def _stream_chunks(mic: _Microphone, poll: float, stall_timeout: float) -> Iterator[Item]:
    """The open stream's chunks; returns why it had to be given up."""
    blocks, rate, channels = mic.blocks, mic.stream_rate, mic.stream_channels
    stream = mic.stream
    last = time.monotonic()
    while True:
        try:
            pcm = blocks.get(timeout=poll)
        except queue.Empty:
            silent = time.monotonic() - last
            if not stream.active:
                return "the stream stopped (device unplugged?)"
            if silent >= stall_timeout:
                return f"no audio for {silent:.0f} s"
            yield END_OF_STREAM
            continue
        last = time.monotonic()
        yield AudioChunk(to_mono(pcm, channels), rate, channels)


@contextlib.contextmanager
def _stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for a moment, as sounddevice does while it
    initializes PortAudio. A log line another thread writes meanwhile is lost: these are
    milliseconds every few seconds, and only while the microphone is away."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.close(devnull)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _reopen(mic: _Microphone, poll: float) -> Iterator[Item]:
    """Retry opening ``mic`` until it works, yielding END_OF_STREAM every ``poll`` seconds."""
    lost = time.monotonic()
    delay = MIC_RETRY_MIN
    remind = lost + MIC_AWAY_REMINDER
    attempts = 0
    while True:
        due = time.monotonic() + delay
        while (left := due - time.monotonic()) > 0:
            time.sleep(min(poll, left))
            yield END_OF_STREAM
        try:
            # ALSA and PortAudio print a few lines on stderr for every failed open; the
            # first attempt's are kept (they may say why), the rest would fill the journal.
            with _stderr_silenced() if attempts else contextlib.nullcontext():
                mic.refresh()
                mic.open()
        except AudioError as err:
            attempts += 1
            now = time.monotonic()
            if now >= remind:
                remind = now + MIC_AWAY_REMINDER
                log.warning(
                    "microphone %s still away after %.0f min (%s); still looking",
                    mic.name, (now - lost) / 60, err,
                )  # fmt: skip
            else:
                log.debug("microphone %s not back yet: %s", mic.name, err)
            delay = min(delay * 2, MIC_RETRY_MAX)
            continue
        log.info(
            "microphone %s is back (device %d, %d Hz) after %.1f s",
            mic.name, mic.info.index, mic.stream_rate, time.monotonic() - lost,
        )  # fmt: skip
        return
