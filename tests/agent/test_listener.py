"""The listening loop end to end: espeak-ng's "okay nabu" before Korean commands, through
the real wake word model, Vosk, the Korean intent model, the daemon and mosquitto."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from speech import SpeechFactory, korean_speech_fixture, require_tools  # noqa: F401 - fixture
from wake_speech import WAKE_WORD, spoken

from agent.actions import Message
from agent.audio import wav_folder_source, wav_source
from agent.classifier import IntentClassifier
from agent.cli import main
from agent.daemon import Daemon
from agent.listener import Listener, ListenerSettings
from agent.mqtt import MqttLink
from agent.recognizer import Recognizer, RecognizerSettings, load_grammar, packaged_model_dir
from agent.wakeword import WakeWordDetector
from tests.agent.broker import HOST, Mosquitto, Subscriber
from tests.agent.test_daemon import (
    WAKE,
    WAKE_COMMAND,
    collect,
    wake_daemon,
    wav_folder,
)
from tests.agent.test_feedback import Heard

ROOT = Path(__file__).resolve().parents[2]
KO_MODEL = ROOT / "models" / "smart-home-ko"
SITE = "listener"

LIGHT_ON = "부엌 조명 좀 켜줘"
LIGHT_OFF = "거실 조명 꺼 줘"
CHATTER = (
    "오늘 점심은 무엇을 먹을까요",
    "어제 본 영화가 정말 재미있었어요",
    "창문 밖에 비가 조용히 내리고 있습니다",
    "주말에는 가족과 함께 공원에 갈 거예요",
    "이 책은 도서관에서 빌려 왔습니다",
)


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tools()
    return tmp_path_factory.mktemp("listener-speech")


@pytest.fixture(scope="module")
def recognizer() -> Recognizer:
    grammar = load_grammar(KO_MODEL)
    return Recognizer(RecognizerSettings(packaged_model_dir(), grammar, sentence_pause=0.2))


@pytest.fixture()
def site(link: MqttLink) -> Iterator[str]:
    """The site id of a run through the CLI; its retained availability is removed after, so
    that it is not a stray message in another test's subscription."""
    yield SITE
    assert link.publish(Message(f"voice-agent/{SITE}/availability", b"", 1, True), 5.0)


def daemon(recognizer: Recognizer, ko_classifier: IntentClassifier, link: MqttLink) -> Daemon:
    listener = Listener(WakeWordDetector(("okay_nabu",)), ListenerSettings())
    return Daemon(recognizer, ko_classifier, link, listener=listener, site_id="listener")


def run_cli(broker: Mosquitto, tmp_path: Path, wav: Path, *args: str) -> int:
    return main(
        [
            "run",
            "--outbox", str(tmp_path / "outbox.sqlite"),
            "--model", str(KO_MODEL),
            "--vosk-model", str(packaged_model_dir()),
            "--host", HOST,
            "--port", str(broker.port),
            "--site-id", SITE,
            "--wav", str(wav),
            "--set", "status.interval=0",
            *args,
        ]
    )  # fmt: skip


def test_only_commands_after_the_wake_word_act(
    broker: Mosquitto, speech_dir: Path, tmp_path: Path, site: str
) -> None:
    """Through the CLI with the default configuration (engine "micro", okay_nabu)."""
    folder = tmp_path / "wav"
    folder.mkdir()
    spoken(speech_dir, "00", WAKE_WORD, LIGHT_ON).rename(folder / "00.wav")  # one breath
    spoken(speech_dir, "01", LIGHT_ON).rename(folder / "01.wav")  # no wake word: nothing
    spoken(speech_dir, "02", WAKE_WORD, 1.5, LIGHT_OFF).rename(folder / "02.wav")  # a pause
    with Subscriber(broker.port, ("hermes/#", "zigbee2mqtt/#")) as sub:
        assert run_cli(broker, tmp_path, folder) == 0
        messages = [(topic, json.loads(payload)) for topic, payload in collect(sub)]

    assert [topic for topic, _ in messages] == [
        "hermes/hotword/okay_nabu/detected",
        "hermes/asr/textCaptured",
        "hermes/intent/LightOn",
        "zigbee2mqtt/kitchen_light/set",
        "hermes/hotword/okay_nabu/detected",
        "hermes/asr/textCaptured",
        "hermes/intent/LightOff",
        "zigbee2mqtt/living_room_light/set",
    ]
    hotword, captured, intent, action = (payload for _, payload in messages[:4])
    assert list(hotword) == [
        "modelId", "modelVersion", "modelType", "currentSensitivity", "siteId", "sessionId",
        "sendAudioCaptured", "lang", "customEntities",
    ]  # fmt: skip
    assert hotword["modelId"] == "okay_nabu" and hotword["siteId"] == site
    assert hotword["currentSensitivity"] == 0.85 and hotword["lang"] == "ko"
    assert captured["text"] == LIGHT_ON and intent["input"] == LIGHT_ON
    assert action == {"state": "ON"}
    # One session from the wake word to the intent, and the wake word named in both.
    assert hotword["sessionId"] == captured["sessionId"] == intent["sessionId"]
    assert captured["wakewordId"] == intent["wakewordId"] == "okay_nabu"
    assert messages[4][1]["sessionId"] != hotword["sessionId"]
    assert messages[6][1]["input"] == LIGHT_OFF


def test_without_the_wake_word_nothing_is_decoded(
    recognizer: Recognizer,
    ko_classifier: IntentClassifier,
    link: MqttLink,
    speech_dir: Path,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "wav"
    folder.mkdir()
    spoken(speech_dir, "cmd", LIGHT_ON).rename(folder / "00.wav")
    spoken(speech_dir, "chatter", *(p for s in CHATTER for p in (s, 0.4))).rename(folder / "01.wav")
    agent = daemon(recognizer, ko_classifier, link)
    assert list(agent.listen(wav_folder_source(folder))) == []
    assert agent.counters.wakes == 0
    assert agent.counters.recognized == agent.counters.not_recognized == 0


def test_the_engine_none_acts_on_the_same_audio(
    broker: Mosquitto, speech_dir: Path, tmp_path: Path, site: str
) -> None:
    """The other side of the test above: the command alone is a command without a gate."""
    wav = spoken(speech_dir, "cmd", LIGHT_ON)
    with Subscriber(broker.port, ("hermes/intent/#",)) as sub:
        assert run_cli(broker, tmp_path, wav, "--set", "wake.engine=none") == 0
        assert [topic for topic, _ in collect(sub)] == ["hermes/intent/LightOn"]


@pytest.mark.parametrize("rate", [44100, 48000])
def test_a_stereo_source_at_its_own_rate(
    recognizer: Recognizer,
    ko_classifier: IntentClassifier,
    link: MqttLink,
    speech_dir: Path,
    rate: int,
) -> None:
    wav = spoken(speech_dir, f"stereo-{rate}", WAKE_WORD, LIGHT_ON, rate=rate, channels=2)
    agent = daemon(recognizer, ko_classifier, link)
    agent.cues = heard = Heard()
    outcomes = list(agent.listen(wav_source(wav)))
    assert heard.cues == ["wake", "accepted"]
    assert [(o.decision.transcript.text, o.decision.intent) for o in outcomes] == [
        (LIGHT_ON, "LightOn")
    ]
    assert outcomes[0].wakeword_id == "okay_nabu" and outcomes[0].complete
    assert agent.counters.wakes == 1


def test_a_wake_word_without_a_command_ends_at_the_timeout(
    recognizer: Recognizer,
    ko_classifier: IntentClassifier,
    link: MqttLink,
    speech_dir: Path,
) -> None:
    wav = spoken(speech_dir, "alone", WAKE_WORD, 3.0, LIGHT_ON)
    listener = Listener(WakeWordDetector(("okay_nabu",)), ListenerSettings(command_timeout=2.0))
    agent = Daemon(recognizer, ko_classifier, link, listener=listener)
    # The command came after the timeout: it was not listened to.
    assert list(agent.listen(wav_source(wav))) == []
    assert agent.counters.wakes == 1


@pytest.mark.parametrize(
    ("manifest", "tflite", "cause"),
    [
        ('{"model": "x.tflite", "micro": ', None, "not a wake word manifest (invalid JSON"),
        (
            '{"model": "x.tflite", "micro": {"probability_cutoff": 0.9, "sliding_window_size": 5}}',
            None,
            "x.tflite does not exist",
        ),
        (
            '{"model": "x.tflite", "micro": {"probability_cutoff": 0.9, "sliding_window_size": 5}}',
            b"\x1c\x00\x00\x00TFL3" + b"\x07" * 4000,
            "x.tflite: not a TensorFlow Lite model",
        ),
    ],
)
def test_a_bad_wake_model_is_one_line_and_exit_2(
    broker: Mosquitto,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    manifest: str,
    tflite: bytes | None,
    cause: str,
) -> None:
    (tmp_path / "x.json").write_text(manifest, encoding="utf-8")
    if tflite is not None:
        (tmp_path / "x.tflite").write_bytes(tflite)
    config = tmp_path / "config.toml"
    config.write_text('[wake]\nmodels = ["x.json"]\n', encoding="utf-8")
    status = run_cli(broker, tmp_path, tmp_path / "x.json", "--config", str(config))
    err = capfd.readouterr().err
    assert status == 2
    assert err.count("\n") == 1 and err.startswith("voice-agent: error: ")
    assert cause in err and str(tmp_path) in err
    assert not (tmp_path / "outbox.sqlite").exists()  # refused before anything was touched


def test_the_phrase_engine_counts_its_wake_phrases(
    recognizer: Recognizer,
    ko_classifier: IntentClassifier,
    link: MqttLink,
    korean_speech: SpeechFactory,
    tmp_path: Path,
) -> None:
    agent = wake_daemon(recognizer, ko_classifier, link, window=5.0)
    folder = wav_folder(korean_speech, tmp_path, f"{WAKE} {WAKE_COMMAND}", WAKE_COMMAND)
    outcomes = list(agent.listen(wav_folder_source(folder)))
    assert [o.wakeword_id for o in outcomes] == [None]  # a phrase has no model id
    assert agent.counters.wakes == 1
