"""The watchdog is fed only while the agent is alive: real MqttLink and Courier threads on a
real mosquitto, pings on a real AF_UNIX notify socket, and ``voice-agent run`` whose audio
stops flowing."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.publish as publish
import pytest

from agent.delivery import Courier
from agent.liveness import Liveness
from agent.mqtt import MqttLink, MqttSettings
from agent.notify import Notifier
from agent.outbox import Outbox, OutboxSettings
from agent.recognizer import packaged_model_dir
from tests.agent.broker import HOST, Mosquitto

ROOT = Path(__file__).resolve().parents[2]
KO_MODEL = ROOT / "models" / "smart-home-ko"
RATE = 16000


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent")


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[Notifier, socket.socket]]:
    """A notify socket where systemd's would be, and a Notifier that expects pings."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(0.2)
        yield Notifier(str(path), watchdog_usec=400_000), sock


def received(sock: socket.socket, wait: float = 0.2, limit: float = 2.0) -> list[bytes]:
    """Every datagram that arrives until none has for ``wait`` seconds, or ``limit`` passed
    (pings keep coming while something is alive)."""
    got: list[bytes] = []
    end = time.monotonic() + limit
    sock.settimeout(wait)
    while time.monotonic() < end:
        try:
            got.append(sock.recv(4096))
        except (TimeoutError, BlockingIOError):  # BlockingIOError: wait=0, nothing queued
            break
    return got


@pytest.fixture
def parts(broker: Mosquitto, tmp_path: Path) -> Iterator[tuple[MqttLink, Courier]]:
    """A connected link and a running courier, as ``voice-agent run`` starts them."""
    outbox = Outbox(OutboxSettings(tmp_path / "outbox.sqlite"))
    link = MqttLink(MqttSettings(HOST, broker.port, client_id=f"liveness-{uuid.uuid4().hex}"))
    courier = Courier(outbox, link)
    link.start()
    courier.start()
    try:
        assert link.wait_connected(10)
        yield link, courier
    finally:
        courier.stop()
        link.stop()
        outbox.close()


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


def test_pings_while_everything_is_alive(
    parts: tuple[MqttLink, Courier], listener: tuple[Notifier, socket.socket]
) -> None:
    link, courier = parts
    notifier, sock = listener
    assert link.alive and courier.alive
    liveness = Liveness(notifier, {"MQTT network thread": link, "courier thread": courier}, 10)
    assert [liveness.check() for _ in range(3)] == [True, True, True]
    assert received(sock) == [b"WATCHDOG=1"] * 3
    assert liveness.healthy


@pytest.mark.parametrize("dead", ["courier thread", "MQTT network thread"])
def test_a_dead_thread_stops_the_pings_and_is_named_once(
    dead: str,
    parts: tuple[MqttLink, Courier],
    listener: tuple[Notifier, socket.socket],
    caplog: pytest.LogCaptureFixture,
) -> None:
    link, courier = parts
    notifier, sock = listener
    liveness = Liveness(notifier, {"MQTT network thread": link, "courier thread": courier}, 10)
    assert liveness.check()
    if dead == "courier thread":
        courier.stop()
    else:
        link.stop()
    assert [liveness.check() for _ in range(3)] == [False, False, False]
    status = f"STATUS=unhealthy: {dead} is dead".encode()
    assert received(sock) == [b"WATCHDOG=1", status, status, status]
    assert errors(caplog) == [
        f"{dead} is dead; watchdog pings stopped, so systemd will restart the agent"
    ]
    assert not liveness.healthy


def test_a_handler_that_raises_kills_the_network_thread_and_the_watchdog_sees_it(
    broker: Mosquitto, listener: tuple[Notifier, socket.socket]
) -> None:
    """Not stopped by us: paho lets a callback's exception end its network thread (the
    process lives on, and without the check every command would wait in the outbox)."""
    notifier, sock = listener
    link = MqttLink(MqttSettings(HOST, broker.port, client_id=f"liveness-{uuid.uuid4().hex}"))
    topic = f"test/liveness/{uuid.uuid4().hex}"

    def handler(topic: str, payload: bytes) -> None:
        raise RuntimeError("a bug in a handler")

    link.subscribe(topic, 1, handler)
    link.start()
    try:
        assert link.wait_connected(10)
        liveness = Liveness(notifier, {"MQTT network thread": link}, 10)
        assert liveness.check()
        time.sleep(0.2)  # the SUBACK
        publish.single(topic, b"boom", qos=1, hostname=HOST, port=broker.port)
        deadline = time.monotonic() + 10
        while link.alive and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not link.alive
        assert liveness.problem() == "MQTT network thread is dead"
        assert not liveness.check()
        assert received(sock)[-1] == b"STATUS=unhealthy: MQTT network thread is dead"
    finally:
        link.stop()


def test_a_stalled_audio_loop_stops_the_pings_until_it_beats_again(
    parts: tuple[MqttLink, Courier],
    listener: tuple[Notifier, socket.socket],
    caplog: pytest.LogCaptureFixture,
) -> None:
    _, courier = parts
    notifier, sock = listener
    now = [1000.0]
    liveness = Liveness(notifier, {"courier thread": courier}, 10.0, clock=lambda: now[0])
    now[0] += 9.5
    assert liveness.check()  # within the stall limit
    now[0] += 1.0
    assert not liveness.check()
    now[0] += 5.0
    assert not liveness.check()
    liveness.beat()
    assert liveness.check()
    unhealthy = b"STATUS=unhealthy: audio loop stalled for %d s (audio device or recognizer stuck)"
    assert received(sock) == [b"WATCHDOG=1", unhealthy % 10, unhealthy % 16, b"WATCHDOG=1"]
    messages = [r.getMessage() for r in caplog.records if r.name == "agent.liveness"]
    assert messages == [
        "audio loop stalled for 10 s (audio device or recognizer stuck); watchdog pings"
        " stopped, so systemd will restart the agent",
        "alive again (was: audio loop stalled for 16 s (audio device or recognizer stuck));"
        " watchdog pings resumed",
    ]


def test_the_supervisor_thread_pings_until_a_part_dies(
    parts: tuple[MqttLink, Courier], listener: tuple[Notifier, socket.socket]
) -> None:
    link, courier = parts
    notifier, sock = listener
    liveness = Liveness(notifier, {"MQTT network thread": link, "courier thread": courier}, 10)
    liveness.start(0.05)
    try:
        time.sleep(0.5)
        before = received(sock, wait=0.0)
        assert before.count(b"WATCHDOG=1") >= 5
        courier.stop()
        after = received(sock, limit=0.5)
    finally:
        liveness.stop()
    # Perhaps one last ping from before the courier stopped, then only the complaint.
    complaints = [d for d in after if d != b"WATCHDOG=1"]
    assert complaints and set(complaints) == {b"STATUS=unhealthy: courier thread is dead"}
    assert b"WATCHDOG=1" not in after[after.index(complaints[0]) :]


# -- the real daemon ------------------------------------------------------------------------


def test_run_stops_pinging_when_its_audio_stops_and_resumes_when_it_flows(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """A pipe whose writer stalls stands in for a stuck sound device: the audio loop gets
    nothing, so after ``audio.stall_timeout`` the pings stop (systemd would restart us)."""
    config = tmp_path / "config.toml"
    config.write_text("[audio]\nstall_timeout = 1.0\n")
    notify = tmp_path / "notify"
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "200000"}
    command = [
        sys.executable, "-m", "agent", "run", "--config", str(config),
        "--model", str(KO_MODEL), "--vosk-model", str(packaged_model_dir()),
        "--source", "stdin", "--rate", str(RATE),
        "--host", HOST, "--port", str(broker.port),
        "--outbox", str(tmp_path / "outbox.sqlite"),
    ]  # fmt: skip
    flowing = threading.Event()
    flowing.set()
    done = threading.Event()
    log = tmp_path / "agent.log"
    with (
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock,
        log.open("wb") as stderr,
    ):
        sock.bind(str(notify))
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdin=subprocess.PIPE, stderr=stderr)
        assert process.stdin is not None
        stdin = process.stdin

        def write_audio() -> None:
            # A tenth of a second of silence every tenth of a second, as a microphone does.
            while not done.is_set():
                if flowing.wait(0.1):
                    try:
                        stdin.write(b"\0\0" * (RATE // 10))
                        stdin.flush()
                    except OSError:
                        return
                    time.sleep(0.1)

        writer = threading.Thread(target=write_audio, daemon=True)
        writer.start()
        try:
            deadline = time.monotonic() + 60
            while b"READY=1" not in b"".join(received(sock, wait=1.0)):
                assert time.monotonic() < deadline and process.poll() is None, log.read_text()
            healthy = received(sock, wait=0.0) + received(sock, wait=1.0)
            assert healthy.count(b"WATCHDOG=1") >= 3, healthy

            flowing.clear()  # the "device" hangs
            time.sleep(2.5)
            stalled = received(sock, wait=0.5)
            complaint = next(d for d in stalled if d.startswith(b"STATUS=unhealthy"))
            assert complaint.startswith(b"STATUS=unhealthy: audio loop stalled for ")
            assert b"WATCHDOG=1" not in stalled[stalled.index(complaint) :], stalled

            flowing.set()  # it comes back before systemd gave up
            time.sleep(1.0)
            assert b"WATCHDOG=1" in received(sock, wait=0.5)

            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=15) == 0, log.read_text()
        finally:
            done.set()
            if process.poll() is None:
                process.kill()
                process.wait()
    text = log.read_text()
    assert text.count("; watchdog pings stopped, so systemd will restart the agent") == 1, text
    assert "ERROR agent.liveness: audio loop stalled for " in text
    assert text.count("watchdog pings resumed") == 1, text
    assert "Traceback" not in text
