"""The wake word detector: the bundled microWakeWord models on espeak-ng speech, at the
source's own rate, and one-line errors for a model that cannot be used."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from speech import require_tools
from wake_speech import WAKE_WORD, spoken

from agent.audio import AudioChunk, wav_source
from agent.wakeword import BUNDLED, Detection, WakeWordDetector, WakeWordError, load_model

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def speech_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tools()
    return tmp_path_factory.mktemp("wake-speech")


def detections(detector: WakeWordDetector, path: Path) -> list[Detection]:
    found = []
    for item in wav_source(path):
        if isinstance(item, AudioChunk):
            detection = detector.process(item)
            if detection is not None:
                found.append(detection)
    return found


@pytest.mark.parametrize(("rate", "channels"), [(22050, 1), (16000, 1), (44100, 2), (48000, 2)])
def test_okay_nabu_is_heard_at_any_rate(speech_dir: Path, rate: int, channels: int) -> None:
    path = spoken(speech_dir, f"okay-{rate}-{channels}", WAKE_WORD, rate=rate, channels=channels)
    found = detections(WakeWordDetector(("okay_nabu",)), path)
    assert len(found) == 1
    detection = found[0]
    assert detection.wakeword_id == "okay_nabu"
    assert detection.probability > 0.85  # the manifest's own cutoff
    # 0.5 s of silence, then about 0.8 s of "okay nabu": it fires just after the word.
    assert 1.1 < detection.position < 1.7


def test_korean_speech_and_other_wake_words_do_not_wake_it(speech_dir: Path) -> None:
    path = spoken(speech_dir, "chatter", "오늘 날씨 어때", 0.3, "부엌 조명 좀 켜줘", "alexa")
    assert detections(WakeWordDetector(("okay_nabu",)), path) == []


def test_refractory_time_takes_one_of_two_close_wake_words(speech_dir: Path) -> None:
    path = spoken(speech_dir, "twice", WAKE_WORD, 1.0, WAKE_WORD)
    once = detections(WakeWordDetector(("okay_nabu",), refractory=4.0), path)
    assert len(once) == 1
    # The probability stays above the cutoff for about half a second after the word: the
    # refractory time is what makes that one detection, not many.
    twice = detections(WakeWordDetector(("okay_nabu",), refractory=1.0), path)
    assert len(twice) == 2 and twice[0] == once[0]
    assert len(detections(WakeWordDetector(("okay_nabu",), refractory=0.0), path)) > 2


def test_cutoff_overrides_the_manifest(speech_dir: Path) -> None:
    path = spoken(speech_dir, "okay", WAKE_WORD)
    detector = WakeWordDetector(("okay_nabu", "alexa"), cutoff=0.999)
    assert detector.cutoff("okay_nabu") == detector.cutoff("alexa") == 0.999
    assert detections(detector, path) == []
    assert WakeWordDetector(("okay_nabu",)).cutoff("okay_nabu") == 0.85


def test_reset_forgets_the_stream(speech_dir: Path) -> None:
    path = spoken(speech_dir, "okay", WAKE_WORD)
    detector = WakeWordDetector(("okay_nabu",), refractory=60.0)
    assert len(detections(detector, path)) == 1
    assert detections(detector, path) == []  # still refractory
    detector.reset()
    assert len(detections(detector, path)) == 1


def test_bundled_models_load() -> None:
    for name in BUNDLED:
        model = load_model(name)
        assert model.id == name and model.tflite.is_file() and 0 < model.cutoff <= 1


def custom_model(tmp_path: Path, manifest: object, tflite: bytes | None = None) -> Path:
    path = tmp_path / "hey_pi.json"
    text = manifest if isinstance(manifest, str) else json.dumps(manifest)
    path.write_text(text, encoding="utf-8")
    if tflite is not None:
        (tmp_path / "hey_pi.tflite").write_bytes(tflite)
    return path


MANIFEST = {
    "type": "micro",
    "wake_word": "Hey Pi",
    "model": "hey_pi.tflite",
    "micro": {"probability_cutoff": 0.9, "sliding_window_size": 5},
}


def test_a_users_manifest_is_loaded_relative_to_its_folder(tmp_path: Path) -> None:
    bundled = load_model("okay_nabu").tflite
    path = custom_model(tmp_path, MANIFEST, bundled.read_bytes())
    detector = WakeWordDetector(("hey_pi.json",), base_dir=tmp_path)
    (model,) = detector.models
    assert (model.id, model.wake_word, model.manifest) == ("hey_pi", "Hey Pi", path)
    assert detector.cutoff("hey_pi") == 0.9


def junk_tflite() -> bytes:
    # A flatbuffer's size prefix and "TFL3" identifier, then noise: TensorFlow Lite's C
    # library crashed the whole process on this before the model was checked first.
    return b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 8


@pytest.mark.parametrize(
    ("manifest", "tflite", "message"),
    [
        ('{"model": "hey_pi.tflite", "micro": ', None, "not a wake word manifest (invalid JSON"),
        ({"model": "hey_pi.tflite"}, None, "not a microWakeWord manifest"),
        (MANIFEST, None, "hey_pi.tflite does not exist"),
        (MANIFEST, junk_tflite(), "hey_pi.tflite: not a TensorFlow Lite model (TensorFlow Lite: "),
        (MANIFEST, b"", "hey_pi.tflite: not a TensorFlow Lite model"),
        (
            {**MANIFEST, "micro": {"probability_cutoff": 2, "sliding_window_size": 5}},
            None,
            "micro.probability_cutoff must be a number from 0 to 1",
        ),
    ],
)
def test_a_bad_model_is_one_line(
    tmp_path: Path, manifest: object, tflite: bytes | None, message: str
) -> None:
    path = custom_model(tmp_path, manifest, tflite)
    with pytest.raises(WakeWordError) as info:
        WakeWordDetector((str(path),))
    text = str(info.value)
    assert message in text and len(text.splitlines()) == 1
    assert str(path.parent) in text


def test_an_intent_model_is_not_a_wake_word_model(tmp_path: Path) -> None:
    shutil.copy(ROOT / "models/smart-home-ko/intent.tflite", tmp_path / "hey_pi.tflite")
    path = custom_model(tmp_path, MANIFEST)
    with pytest.raises(WakeWordError, match=r"hey_pi.tflite: not a microWakeWord model"):
        WakeWordDetector((str(path),))


def test_a_missing_manifest_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(WakeWordError) as info:
        WakeWordDetector(("wake/hey_pi.json",), base_dir=tmp_path)
    assert str(info.value) == f"{tmp_path / 'wake/hey_pi.json'}: wake word manifest does not exist"


def test_an_unknown_name_is_one_line() -> None:
    with pytest.raises(WakeWordError, match=r"^okay_nabu2: not a bundled wake word \(okay_nabu"):
        WakeWordDetector(("okay_nabu2",))
