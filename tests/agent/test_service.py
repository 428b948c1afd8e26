"""``voice-agent run`` as systemd runs it: READY, STATUS, WATCHDOG and STOPPING on a real
notify socket, speech on stdin, a real mosquitto, SIGTERM to stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import wave
from pathlib import Path

import pytest
from speech import SpeechFactory, korean_speech_fixture  # noqa: F401 - registers the fixture

from agent.audio import END_OF_STREAM
from agent.notify import Notifier
from agent.recognizer import packaged_model_dir
from agent.service import _Requests, _Stop, _supervised
from tests.agent.broker import HOST, Mosquitto, Subscriber

ROOT = Path(__file__).resolve().parents[2]
KO_MODEL = ROOT / "models" / "smart-home-ko"
RATE = 16000


def datagrams(sock: socket.socket, until: bytes, timeout: float) -> list[bytes]:
    """Everything received until a datagram containing ``until`` (inclusive)."""
    got: list[bytes] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(4096)
        except TimeoutError:
            continue
        got.append(data)
        if until in data:
            return got
    raise AssertionError(f"no {until!r} within {timeout} s; got {got}")


def test_systemd_notifications(
    broker: Mosquitto, korean_speech: SpeechFactory, tmp_path: Path
) -> None:
    with wave.open(str(korean_speech("노래 정지", RATE).path), "rb") as wav:
        speech = wav.readframes(wav.getnframes())
    notify = tmp_path / "notify"
    env = {
        **os.environ,
        "NOTIFY_SOCKET": str(notify),
        "WATCHDOG_USEC": "400000",  # pings every 0.2 s of processed audio
    }
    command = [
        sys.executable, "-m", "agent", "run",
        "--model", str(KO_MODEL), "--vosk-model", str(packaged_model_dir()),
        "--source", "stdin", "--rate", str(RATE),
        "--host", HOST, "--port", str(broker.port),
        "--outbox", str(tmp_path / "outbox.sqlite"),
        "--set", "wake.engine=none",
    ]  # fmt: skip
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
        Subscriber(broker.port, "hermes/intent/#") as sub,
    ):
        sock.bind(str(notify))
        sock.settimeout(0.5)
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stdin is not None
        try:
            # READY only comes once audio flows (the source is open).
            process.stdin.write(b"\0\0" * RATE)
            process.stdin.flush()
            ready = datagrams(sock, b"READY=1", 60)[-1]
            assert ready == b"READY=1\nSTATUS=listening (stdin 16000 Hz)"
            process.stdin.write(speech + b"\0\0" * RATE * 2)
            process.stdin.flush()
            sub.wait_for("hermes/intent/MusicStop", timeout=15)
            after = datagrams(sock, b"STATUS=1 commands", 10)
            assert b"WATCHDOG=1" in after
            assert after[-1] == b"STATUS=1 commands, 0 not recognized"
            process.send_signal(signal.SIGTERM)
            assert datagrams(sock, b"STOPPING=1", 10)[-1] == b"STOPPING=1"
            _, stderr = process.communicate(timeout=15)
        finally:
            if process.poll() is None:
                process.kill()
    assert process.returncode == 0, stderr.decode()


def test_a_stop_swallowed_by_logging_still_stops_the_loop_at_the_next_item() -> None:
    # The SIGTERM handler raises to interrupt a blocking read, but an exception raised while
    # a log line is being written is caught by logging; the recorded stop ends the loop
    # before the next item instead of leaving the daemon running.
    requests = _Requests()
    items = _supervised(
        iter([END_OF_STREAM, END_OF_STREAM]),
        None,  # type: ignore[arg-type]  # config and daemon serve only a reload
        None,  # type: ignore[arg-type]
        requests,
        Notifier(None),
        None,
    )
    assert next(items) is END_OF_STREAM
    with pytest.raises(_Stop):
        requests.stop_now(signal.SIGTERM, None)
    with pytest.raises(_Stop, match="SIGTERM"):
        next(items)
