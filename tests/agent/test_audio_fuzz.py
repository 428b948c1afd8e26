"""Hostile audio never crashes the daemon: only a one-line AudioError, or audio Vosk decodes.

The strategies (tests/fuzzing.py) lie in every WAV header field, cut and corrupt valid
files, hand over other formats and random bytes, and trickle odd-length PCM through stdin;
whatever a source yields goes through the real Korean Vosk model. bench/fuzz.py runs the
same strategies with thousands of examples.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import tempfile
import threading
import tracemalloc
from collections.abc import Iterator
from itertools import islice
from pathlib import Path

import pytest
from hypothesis import given

from agent.audio import AudioChunk, AudioError, wav_folder_source, wav_source
from agent.broker import free_port
from agent.recognizer import Recognizer, RecognizerSettings, load_grammar, packaged_model_dir
from tests.fuzzing import (
    StdinPlan,
    WavPlan,
    check_stdin,
    check_wav,
    check_wav_folder,
    fuzz_settings,
    recognize,
    stdin_plans,
    wav_inputs,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """A folder for the fuzzed files, in memory where possible: hundreds are written."""
    memory = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=memory if memory.is_dir() else None) as folder:
        yield Path(folder)


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    """The Korean speech model held to the Korean intent model's grammar, loaded once."""
    return Recognizer(
        RecognizerSettings(packaged_model_dir(), load_grammar(ROOT / "models/smart-home-ko"))
    )


def valid_wav(frames: int = 1600, rate: int = 16000, channels: int = 1, **lies: object) -> bytes:
    fields: dict[str, object] = {
        "tag": 1, "channels": channels, "rate": rate, "bits": 16, "frames": frames,
        "fmt_size": 16, "data_size_delta": 0, "riff_size_delta": 0, "extra_before": b"",
        "extra_after": b"", "sub_tag": 1, "fmt_first": True, "seed": 1,
    }  # fmt: skip
    fields.update(lies)
    return WavPlan(**fields).render()  # type: ignore[arg-type]


@fuzz_settings(400)
@given(data=wav_inputs())
def test_fuzzed_wav_files(scratch: Path, recognizer: Recognizer, data: bytes) -> None:
    result = check_wav(scratch / "fuzz.wav", data)
    if result.outcome == "accepted":
        for transcript in recognize(recognizer, result.items):
            assert 0.0 <= transcript.unk_ratio <= 1.0


@fuzz_settings(300)
@given(plan=stdin_plans)
def test_fuzzed_stdin_streams(recognizer: Recognizer, plan: StdinPlan) -> None:
    result = check_stdin(plan)
    if result.outcome == "accepted":
        recognize(recognizer, result.items)


@pytest.mark.parametrize(
    ("lies", "cause"),
    [
        # Kaldi's resampler aborts the process (SIGABRT) at 2**32 - 1 Hz and spends minutes
        # upsampling 1 Hz: both must stop at the header.
        ({"rate": 2**32 - 1}, "unsupported sample rate 4294967295 Hz (expected 8000 to 192000)"),
        ({"rate": 1}, "unsupported sample rate 1 Hz (expected 8000 to 192000)"),
        ({"channels": 0}, "not a valid WAV file (bad # of channels)"),
        ({"channels": 7}, "expected mono or stereo, got 7 channels"),
        ({"bits": 24}, "not a 16-bit PCM WAV file (sample width 3 bytes)"),
        ({"tag": 0x55}, "not a 16-bit PCM WAV file (MP3)"),
        ({"fmt_size": 2}, "truncated WAV file (header ends early)"),
        ({"data_size_delta": 10**6}, "truncated WAV file (data ends after 3200 of 1003200 bytes)"),
    ],
)
def test_header_lies_give_one_line(tmp_path: Path, lies: dict[str, object], cause: str) -> None:
    path = tmp_path / "lies.wav"
    path.write_bytes(valid_wav(**lies))
    with pytest.raises(AudioError) as info:
        list(wav_source(path))
    assert str(info.value) == f"{path}: {cause}"


def test_a_chunk_shorter_than_its_fields_gives_one_line(tmp_path: Path) -> None:
    # Found by the fuzzer: wave's chunk reader raised a bare RuntimeError here.
    path = tmp_path / "short.wav"
    path.write_bytes(
        b"RIFF\x84\x02\x00\x00WAVEodd \x03\x00\x00\x00abcfmt \x02\x00\x00\x00\x01\x00d"
    )
    with pytest.raises(AudioError) as info:
        list(wav_source(path))
    assert str(info.value) == f"{path}: not a valid WAV file (malformed chunk)"


def test_a_partial_last_frame_is_dropped_not_a_crash(
    tmp_path: Path, recognizer: Recognizer
) -> None:
    # A stereo data chunk of 4 frames and 3 bytes: numpy could not reshape the tail.
    good = valid_wav(frames=4, channels=2)
    path = tmp_path / "odd.wav"
    path.write_bytes(good[:40] + struct.pack("<I", 19) + good[44:] + b"\x01\x02\x03")
    result = check_wav(path)
    assert result.outcome == "accepted"
    chunks = [i for i in result.items if isinstance(i, AudioChunk)]
    assert sum(len(c.pcm) for c in chunks) == 4 * 2  # 4 mono samples; the 3 bytes dropped
    recognize(recognizer, result.items)


def sparse(path: Path, head: bytes, size: int = 6 * 2**30) -> Path:
    """A file of ``size`` bytes that starts with ``head`` and takes no disk space."""
    with path.open("wb") as file:
        file.write(head)
        file.truncate(size)
    return path


def peak_allocation(run: object) -> int:
    """Bytes Python allocated at the peak while ``run()`` ran."""
    tracemalloc.start()
    try:
        run()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_huge_files_are_streamed_never_read_whole(tmp_path: Path) -> None:
    """6 GB sparse files: a WAV of unknown length streams chunk by chunk; a fmt chunk that
    claims 4 GB and garbage without a header are refused after reading a few bytes."""
    stream = sparse(tmp_path / "stream.wav", valid_wav(frames=0, data_size_delta=None))
    taken: list[object] = []
    used = peak_allocation(lambda: taken.extend(islice(wav_source(stream), 50)))
    assert len(taken) == 50 and all(isinstance(i, AudioChunk) for i in taken)
    assert used < 5_000_000

    lying_fmt = bytearray(valid_wav(frames=0, tag=0x55))
    lying_fmt[16:20] = struct.pack("<I", 0xFFFFFFF0)  # fmt chunk size: ~4 GB
    for name, head, cause in [
        ("fmt.wav", bytes(lying_fmt), "not a 16-bit PCM WAV file (MP3)"),
        ("zeros.wav", b"", "not a WAV file (no RIFF/WAVE header)"),
    ]:
        path = sparse(tmp_path / name, head)

        def refuse(path: Path = path, cause: str = cause) -> None:
            with pytest.raises(AudioError) as info:
                list(wav_source(path))
            assert str(info.value) == f"{path}: {cause}"

        assert peak_allocation(refuse) < 5_000_000


@pytest.mark.parametrize(
    "kind", ["newline", "not-utf8", "directory", "fifo", "dev-zero", "loop", "dangling"]
)
def test_hostile_folder_entries_give_one_line(tmp_path: Path, kind: str) -> None:
    """Names with line breaks or bytes that are not UTF-8, a folder or a FIFO named .wav,
    links to /dev/zero, to themselves or to nothing: one printable line each, and no hang."""
    folder = tmp_path / "clips"
    folder.mkdir()
    raw = os.fsencode(folder)
    if kind == "newline":
        (folder / "a\nb.wav").write_bytes(valid_wav(channels=3))
    elif kind == "not-utf8":
        with open(raw + b"/caf\xe9.wav", "wb") as file:
            file.write(b"not audio")
    elif kind == "directory":
        (folder / "d.wav").mkdir()
    elif kind == "fifo":
        os.mkfifo(folder / "f.wav")
    elif kind == "dev-zero":
        (folder / "z.wav").symlink_to("/dev/zero")
    elif kind == "loop":
        (folder / "loop.wav").symlink_to(folder / "loop.wav")
    else:
        (folder / "gone.wav").symlink_to(folder / "nothing")
    outcome: list[object] = []
    worker = threading.Thread(target=lambda: outcome.append(check_wav_folder(folder)), daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), f"reading a folder with a {kind} entry hangs"
    assert outcome and outcome[0].outcome == "refused"  # type: ignore[attr-defined]


def test_folder_errors_name_the_file_on_one_line(tmp_path: Path) -> None:
    (tmp_path / "a\nb.wav").write_bytes(b"x")
    with pytest.raises(AudioError) as info:
        list(wav_folder_source(tmp_path))
    assert str(info.value) == f"{tmp_path}/a\\u000ab.wav: truncated WAV file (header ends early)"


@pytest.mark.parametrize(
    ("name", "lies", "cause"),
    [
        # Before the rate check, Vosk got this file and Kaldi aborted the process (SIGABRT).
        ("abort.wav", {"rate": 2**32 - 1}, "unsupported sample rate 4294967295 Hz"),
        ("two\nlines.wav", {"channels": 5}, "expected mono or stereo, got 5 channels"),
    ],
)
def test_the_daemon_exits_2_with_one_line(
    tmp_path: Path, name: str, lies: dict[str, object], cause: str
) -> None:
    """`voice-agent run --wav` with the real models: status 2 and one line, no traceback."""
    path = tmp_path / name
    path.write_bytes(valid_wav(**lies))
    done = subprocess.run(
        [
            sys.executable, "-m", "agent", "run", "--once", "--wav", str(path),
            "--model", str(ROOT / "models/smart-home-ko"),
            "--vosk-model", str(packaged_model_dir()),
            "--host", "127.0.0.1", "--port", str(free_port()),
            "--outbox", str(tmp_path / "outbox.sqlite"),
        ],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    # The log lines before it (models loaded, broker retries) are the daemon's own.
    errors = [line for line in done.stderr.splitlines() if line.startswith("voice-agent: ")]
    shown = str(path).replace("\n", "\\u000a")
    assert "Traceback" not in done.stderr
    assert len(errors) == 1 and errors[0].startswith(f"voice-agent: error: {shown}: {cause}"), (
        done.stderr
    )
