"""Audio sources: WAV decoding at any rate, downmixing, stdin framing and one-line errors."""

from __future__ import annotations

import io
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from speech import korean_speech_fixture  # noqa: F401 - registers the fixture

from agent.audio import (
    END_OF_STREAM,
    AudioChunk,
    AudioError,
    EndOfStream,
    list_input_devices,
    stdin_source,
    to_mono,
    wav_folder_source,
    wav_source,
)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """Write int16 ``samples`` (frames x channels, or 1-D mono) as a PCM WAV."""
    frames = samples.reshape(len(samples), -1).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(frames.shape[1])
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(frames.tobytes())
    return path


def pcm_of(items: list) -> bytes:
    return b"".join(item.pcm for item in items if isinstance(item, AudioChunk))


def sox_wav(path: Path, *encoding: str) -> Path:
    """A 0.1 s sine written by sox with the given encoding options."""
    subprocess.run(
        ["sox", "-n", "-r", "16000", *encoding, str(path), "synth", "0.1", "sine", "440"],
        check=True,
        capture_output=True,
    )
    return path


@pytest.mark.parametrize("rate", [16000, 22050, 44100])
@pytest.mark.parametrize("channels", [1, 2])
def test_good_wavs_decode_at_any_rate(tmp_path: Path, rate: int, channels: int) -> None:
    rng = np.random.default_rng(rate + channels)
    mono = rng.integers(-20000, 20000, size=rate // 2, dtype=np.int16)
    samples = np.stack([mono] * channels, axis=1) if channels == 2 else mono
    path = write_wav(tmp_path / "a.wav", samples, rate)

    items = list(wav_source(path, chunk_frames=1000))

    assert isinstance(items[-1], EndOfStream)
    assert items[-1].source == str(path)
    chunks = items[:-1]
    assert all(c.rate == rate and c.channels == channels for c in chunks)
    assert np.array_equal(np.frombuffer(pcm_of(chunks), "<i2"), mono)
    assert sum(c.seconds for c in chunks) == pytest.approx(0.5, abs=1e-3)


def test_stereo_is_averaged_without_overflow() -> None:
    left = np.array([32767, -32768, 100, 1], dtype=np.int16)
    right = np.array([32767, -32768, -100, 2], dtype=np.int16)
    stereo = np.stack([left, right], axis=1).astype("<i2").tobytes()
    assert np.frombuffer(to_mono(stereo, 2), "<i2").tolist() == [32767, -32768, 0, 1]


def test_espeak_wav_is_readable(korean_speech) -> None:
    speech = korean_speech("안녕")
    items = list(wav_source(speech.path))
    assert items[0].rate == 22050 and items[0].channels == 1
    assert items[-1] == EndOfStream(str(speech.path))


def test_folder_yields_sorted_utterances(tmp_path: Path) -> None:
    write_wav(tmp_path / "b.wav", np.full(100, 2, np.int16), 16000)
    write_wav(tmp_path / "a.wav", np.full(100, 1, np.int16), 8000)
    (tmp_path / "notes.txt").write_text("not audio")

    items = list(wav_folder_source(tmp_path))

    assert [type(i).__name__ for i in items] == [
        "AudioChunk",
        "EndOfStream",
        "AudioChunk",
        "EndOfStream",
    ]
    assert items[0].rate == 8000 and items[2].rate == 16000
    assert items[1].source.endswith("a.wav") and items[3].source.endswith("b.wav")


def test_stdin_keeps_partial_frames_for_the_next_read() -> None:
    class Trickle(io.RawIOBase):
        """A pipe that returns at most 3 bytes per read, splitting stereo frames."""

        def __init__(self, data: bytes) -> None:
            self.data = data

        def read(self, size: int = -1) -> bytes:
            out, self.data = self.data[:3], self.data[3:]
            return out

    frames = np.array([[10, 20], [30, 50], [-4, -6]], dtype="<i2")
    items = list(stdin_source(16000, 2, stream=Trickle(frames.tobytes())))

    assert items[-1] == EndOfStream("<stdin>")
    assert np.frombuffer(pcm_of(items), "<i2").tolist() == [15, 40, -5]


def test_end_of_stream_marker_is_a_value() -> None:
    assert EndOfStream() == END_OF_STREAM


@pytest.mark.parametrize(
    ("name", "make", "cause"),
    [
        ("u8.wav", lambda p: sox_wav(p, "-b", "8", "-e", "unsigned-integer"),
         "not a 16-bit PCM WAV file (sample width 1 byte)"),
        ("s24.wav", lambda p: sox_wav(p, "-b", "24"),
         "not a 16-bit PCM WAV file (sample width 3 bytes)"),
        ("f32.wav", lambda p: sox_wav(p, "-b", "32", "-e", "floating-point"),
         "not a 16-bit PCM WAV file (32-bit float)"),
        ("adpcm.wav", lambda p: sox_wav(p, "-e", "ima-adpcm"),
         "not a 16-bit PCM WAV file (IMA ADPCM)"),
        ("quad.wav", lambda p: sox_wav(p, "-b", "16", "-c", "4"),
         "expected mono or stereo, got 4 channels"),
        ("empty.wav", lambda p: p.write_bytes(b""), "not a WAV file (empty file)"),
        ("notes.wav", lambda p: p.write_text("turn on the light\n"),
         "not a WAV file (no RIFF/WAVE header)"),
    ],
)  # fmt: skip
def test_bad_files_give_one_line(tmp_path: Path, name: str, make, cause: str) -> None:
    path = tmp_path / name
    make(path)
    with pytest.raises(AudioError) as info:
        list(wav_source(path))
    assert str(info.value) == f"{path}: {cause}"


def test_truncated_files_give_one_line(tmp_path: Path) -> None:
    good = write_wav(tmp_path / "good.wav", np.zeros(1000, np.int16), 16000).read_bytes()
    header = tmp_path / "header.wav"
    header.write_bytes(good[:30])
    data = tmp_path / "data.wav"
    data.write_bytes(good[:544])

    with pytest.raises(AudioError) as info:
        list(wav_source(header))
    assert str(info.value) == f"{header}: truncated WAV file (header ends early)"
    with pytest.raises(AudioError) as info:
        list(wav_source(data))
    assert str(info.value) == f"{data}: truncated WAV file (data ends after 500 of 2000 bytes)"


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(AudioError, match=r"nope\.wav: cannot read: No such file"):
        list(wav_source(tmp_path / "nope.wav"))
    with pytest.raises(AudioError, match="not a directory"):
        list(wav_folder_source(tmp_path / "nope"))


def test_list_input_devices_without_hardware() -> None:
    # A CI box has PortAudio but no sound card: an empty list or a clean AudioError, no crash.
    try:
        devices = list_input_devices()
    except AudioError as err:
        assert "\n" not in str(err)
    else:
        assert all(d.channels > 0 for d in devices)
