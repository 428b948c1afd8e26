"""End to end: Korean speech (espeak-ng) -> real Vosk model -> Korean intent model -> mosquitto.

The phrases were chosen by decoding every sentence of examples/ko/smart-home.yaml against
its whole-sentence grammar (models/smart-home-ko/grammar.json): these come back exact, and
Vosk is deterministic. A subscriber on ``#`` sees exactly what a Home Assistant or Node-RED
consumer would.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from speech import SpeechFactory, korean_speech_fixture  # noqa: F401 - registers the fixture

from agent.audio import wav_folder_source
from agent.classifier import IntentClassifier
from agent.cli import main
from agent.daemon import Daemon
from agent.mqtt import MqttLink
from agent.recognizer import Recognizer, RecognizerSettings, load_grammar, packaged_model_dir
from agent.wake import WakeGate
from tests.agent.broker import HOST, Mosquitto, Subscriber

ROOT = Path(__file__).resolve().parents[2]
KO_MODEL = ROOT / "models" / "smart-home-ko"

LIGHT_ON = "부엌 조명 좀 켜줘"
LIGHT_OFF = "거실 조명 꺼 줘"
# Vosk keeps adaptation state from one utterance to the next, so a few phrases decode
# differently depending on what came before; these came back exact in every order tried.
MUSIC_STOP = "노래 정지"
WEATHER = "오늘 날씨 어때"  # one of the spec's out-of-scope sentences


def wav_folder(speech: SpeechFactory, directory: Path, *phrases: str) -> Path:
    """A folder of WAVs named so that they sort in the order given."""
    directory.mkdir(parents=True, exist_ok=True)
    for number, phrase in enumerate(phrases):
        shutil.copy(speech(phrase).path, directory / f"{number:02d}.wav")
    return directory


def collect(subscriber: Subscriber, settle: float = 0.5) -> list[tuple[str, bytes]]:
    """Every message that arrives until none has come for ``settle`` seconds."""
    messages = []
    while True:
        try:
            message = subscriber.get(settle)
        except AssertionError:
            return messages
        messages.append((message.topic, message.payload))


def run_cli(broker: Mosquitto, outbox: Path, *args: str) -> int:
    return main(
        [
            "run",
            "--outbox", str(outbox / "outbox.sqlite"),
            "--model", str(KO_MODEL),
            "--vosk-model", str(packaged_model_dir()),
            "--host", HOST,
            "--port", str(broker.port),
            "--set", "wake.engine=none",
            *args,
        ]
    )  # fmt: skip


def test_commands_become_hermes_intents_and_device_actions(
    broker: Mosquitto, korean_speech: SpeechFactory, tmp_path: Path
) -> None:
    folder = wav_folder(korean_speech, tmp_path / "wav", LIGHT_ON, WEATHER, LIGHT_OFF, MUSIC_STOP)
    with Subscriber(broker.port, ("hermes/#", "zigbee2mqtt/#", "voice-agent/#")) as sub:
        assert run_cli(broker, tmp_path, "--wav", str(folder), "--site-id", "kitchen-pi") == 0
        messages = collect(sub)

    # Availability and the health report (retained, on by default) come and go on their own.
    own = {"voice-agent/kitchen-pi/availability", "voice-agent/kitchen-pi/status"}
    topics = [topic for topic, _ in messages if topic not in own]
    assert topics == [
        "hermes/asr/textCaptured",
        "hermes/intent/LightOn",
        "zigbee2mqtt/kitchen_light/set",
        "hermes/asr/textCaptured",
        "hermes/nlu/intentNotRecognized",
        "hermes/asr/textCaptured",
        "hermes/intent/LightOff",
        "zigbee2mqtt/living_room_light/set",
        "hermes/asr/textCaptured",
        "hermes/intent/MusicStop",
        "voice-agent/media/command",
    ]
    payloads = [payload for topic, payload in messages if topic not in own]
    assert payloads[2] == b'{"state":"ON"}'
    assert payloads[7] == b'{"state":"OFF"}'
    assert json.loads(payloads[10]) == {"command": "pause"}

    captured = json.loads(payloads[0])
    assert captured["text"] == LIGHT_ON and captured["siteId"] == "kitchen-pi"
    assert 0 < captured["likelihood"] <= 1 and captured["seconds"] > 0
    intent = json.loads(payloads[1])
    assert intent["input"] == LIGHT_ON
    assert intent["intent"]["intentName"] == "LightOn"
    assert 0.5 < intent["intent"]["confidenceScore"] <= 1
    assert intent["siteId"] == "kitchen-pi" and intent["lang"] == "ko"
    assert intent["sessionId"] == captured["sessionId"] and intent["id"]
    assert 0 < intent["asrConfidence"] <= 1
    assert intent["slots"] == [
        {
            "entity": "room",
            "slotName": "room",
            "rawValue": "부엌",
            "value": {"kind": "Unknown", "value": "kitchen"},
            "range": {"start": 0, "end": 2, "rawStart": 0, "rawEnd": 2},
            "confidence": 1.0,
        }
    ]
    rejected = json.loads(payloads[4])
    assert rejected["input"] == WEATHER and rejected["siteId"] == "kitchen-pi"
    # Retained availability: online while running, offline after a clean stop.
    availability = [p for t, p in messages if t == "voice-agent/kitchen-pi/availability"]
    assert availability[0] == b"online" and availability[-1] == b"offline"


@pytest.mark.parametrize(("phrase", "status"), [(MUSIC_STOP, 0), (WEATHER, 1)])
def test_once_handles_one_utterance_and_reports_it_in_the_exit_status(
    broker: Mosquitto,
    korean_speech: SpeechFactory,
    tmp_path: Path,
    phrase: str,
    status: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = wav_folder(korean_speech, tmp_path, phrase, LIGHT_ON)
    caplog.set_level("INFO", "agent")
    with Subscriber(broker.port, ("hermes/intent/#", "zigbee2mqtt/#")) as sub:
        assert run_cli(broker, tmp_path, "--wav", str(folder), "--once") == status
        received = [topic for topic, _ in collect(sub)]
    # The second file was never handled.
    assert received == (["hermes/intent/MusicStop"] if status == 0 else [])
    lines = [r.getMessage() for r in caplog.records if r.name == "agent.daemon"]
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith(f'"{phrase}" -> ')
    if status == 0:
        assert "-> MusicStop 0." in line and "-> 3 acknowledged |" in line
    else:
        assert "not recognized (out_of_scope; best <none>" in line and "2 acknowledged" in line
    for stage in ("recognize", "classify", "publish"):
        assert f"{stage} " in line and " ms" in line


@pytest.fixture(scope="module")
def ko_recognizer() -> Iterator[Recognizer]:
    yield Recognizer(RecognizerSettings(packaged_model_dir(), load_grammar(KO_MODEL)))


WAKE = "비서"  # in the Korean model's vocabulary, and espeak's rendering decodes exactly
WAKE_COMMAND = "부엌 불 끄기"


def wake_daemon(
    recognizer: Recognizer, classifier: IntentClassifier, link: MqttLink, window: float
) -> Daemon:
    wake = WakeGate(WAKE, window)
    grammar = wake.grammar(load_grammar(KO_MODEL))
    return Daemon(recognizer.with_grammar(grammar), classifier, link, wake=wake)


def test_wake_phrase_gates_commands(
    ko_recognizer: Recognizer,
    ko_classifier: IntentClassifier,
    link: MqttLink,
    korean_speech: SpeechFactory,
    tmp_path: Path,
) -> None:
    daemon = wake_daemon(ko_recognizer, ko_classifier, link, window=5.0)
    folder = wav_folder(
        korean_speech,
        tmp_path,
        WAKE_COMMAND,  # no wake phrase: ignored
        f"{WAKE} {WAKE_COMMAND}",  # wake phrase and command in one breath
        WAKE,  # wake phrase alone opens the window...
        WAKE_COMMAND,  # ...so this one counts
        WAKE_COMMAND,  # and the window closed again after it
    )
    outcomes = list(daemon.listen(wav_folder_source(folder)))
    assert [o.decision.transcript.text for o in outcomes] == [WAKE_COMMAND, WAKE_COMMAND]
    assert [o.decision.intent for o in outcomes] == ["LightOff", "LightOff"]
    assert all(o.complete for o in outcomes)


def test_wake_window_expires(
    ko_recognizer: Recognizer,
    ko_classifier: IntentClassifier,
    link: MqttLink,
    korean_speech: SpeechFactory,
    tmp_path: Path,
) -> None:
    daemon = wake_daemon(ko_recognizer, ko_classifier, link, window=0.5)  # < the command
    folder = wav_folder(korean_speech, tmp_path, WAKE, WAKE_COMMAND)
    assert list(daemon.listen(wav_folder_source(folder))) == []


def test_sigterm_stops_the_service_cleanly(
    broker: Mosquitto, korean_speech: SpeechFactory, tmp_path: Path
) -> None:
    """The real program on stdin PCM, stopped the way systemd stops it."""
    import wave

    with wave.open(str(korean_speech(MUSIC_STOP, 16000).path), "rb") as wav:
        pcm = wav.readframes(wav.getnframes())
    command = [
        sys.executable, "-m", "agent", "run",
        "--model", str(KO_MODEL),
        "--vosk-model", str(packaged_model_dir()),
        "--source", "stdin", "--rate", "16000",
        "--host", HOST, "--port", str(broker.port), "--site-id", "sigterm",
        "--outbox", str(tmp_path / "outbox.sqlite"),
        "--set", "wake.engine=none",
    ]  # fmt: skip
    with Subscriber(broker.port, ("hermes/intent/#", "voice-agent/sigterm/availability")) as sub:
        process = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=False
        )
        assert process.stdin is not None
        sub.wait_for("voice-agent/sigterm/availability", b"online", timeout=30)
        # Speech, then a second of silence so that Vosk's endpoint ends the utterance.
        process.stdin.write(pcm + b"\0\0" * 16000)
        process.stdin.flush()
        sub.wait_for("hermes/intent/MusicStop", timeout=10)
        process.send_signal(signal.SIGTERM)
        sub.wait_for("voice-agent/sigterm/availability", b"offline", timeout=10)
        _, stderr = process.communicate(timeout=10)
    assert process.returncode == 0, stderr.decode()
    log = stderr.decode()
    assert "stopping (SIGTERM)" in log
    assert "Traceback" not in log


def test_bad_audio_is_one_line_and_status_2(
    broker: Mosquitto, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "notes.wav"
    text.write_text("not audio at all\n")
    started = time.monotonic()
    assert run_cli(broker, tmp_path, "--wav", str(text)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert err.startswith(f"voice-agent: error: {text}: not a WAV file")
    assert time.monotonic() - started < 30


def test_missing_speech_model_is_one_line_and_status_2(
    broker: Mosquitto,
    korean_speech: SpeechFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = wav_folder(korean_speech, tmp_path / "wav", MUSIC_STOP)
    status = main(
        ["run", "--model", str(KO_MODEL), "--vosk-model", str(tmp_path / "nowhere"),
         "--wav", str(folder), "--host", HOST, "--port", str(broker.port),
         "--outbox", str(tmp_path / "outbox.sqlite")]
    )  # fmt: skip
    assert status == 2
    assert capsys.readouterr().err == (
        f"voice-agent: error: {tmp_path / 'nowhere'}: Vosk model directory does not exist\n"
    )
