"""Feedback sounds through a real sound server: PulseAudio with a null sink (the fixture of
test_microphone.py), whose monitor is recorded with parec while the agent plays a cue into
the sink. What the monitor hears must be the cue: loud, and at the cue's pitch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import wave
from pathlib import Path

import numpy as np
import pytest
from speech import SpeechFactory, korean_speech_fixture  # noqa: F401 - registers the fixture
from test_microphone import SINK, Pulse, pulse  # noqa: F401 - the PulseAudio fixture

from agent.audio import wav_folder_source
from agent.classifier import IntentClassifier
from agent.cli import main
from agent.config import ConfigError, load_config
from agent.daemon import Daemon
from agent.feedback import CUES, Feedback, FeedbackError, default_sound, read_sound
from agent.mqtt import MqttLink, MqttSettings
from agent.recognizer import Recognizer, RecognizerSettings, load_grammar, packaged_model_dir
from agent.wake import WakeGate
from tests.agent.broker import HOST, Mosquitto

ROOT = Path(__file__).resolve().parents[2]
KO_MODEL = ROOT / "models" / "smart-home-ko"
RECORD_RATE = 16000

# Runs in its own process: PortAudio reads the sound server's environment once per process.
PLAYER = """
import json, sys, time
from contextlib import ExitStack
from pathlib import Path
from agent.config import load_config
from agent.feedback import start_feedback
config = load_config(Path(sys.argv[1]), environ={})
with ExitStack() as stack:  # as 'voice-agent run' starts and stops it
    feedback = start_feedback(config, stack)
    if feedback is not None:
        started = time.perf_counter()
        getattr(feedback, sys.argv[2])()
        call = time.perf_counter() - started
if feedback is None:
    print(json.dumps({"enabled": False, "played": 0, "call": 0.0}))
else:
    print(json.dumps({"enabled": feedback.enabled, "played": feedback.played, "call": call}))
"""


@pytest.fixture(scope="module")
def sound_server(pulse: Pulse) -> Pulse:  # noqa: F811 - the imported fixture
    """A private PulseAudio whose default sink is a null sink named ``SINK``."""
    return pulse


def write_config(directory: Path, feedback: str) -> Path:
    path = directory / "config.toml"
    path.write_text(f'[model]\npath = "{KO_MODEL}"\n[feedback]\n{feedback}\n')
    return path


def tone_wav(path: Path, frequency: float, rate: int, seconds: float = 0.3) -> Path:
    t = np.arange(int(rate * seconds)) / rate
    pcm = (np.sin(2 * np.pi * frequency * t) * 0.4 * 32767).astype("<i2")
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm.tobytes())
    return path


def play_and_record(
    sound_server: Pulse, config: Path, cue: str, tmp_path: Path
) -> tuple[dict, np.ndarray]:
    """Play ``cue`` with the agent's Feedback while parec records the sink's monitor."""
    recording = tmp_path / "monitor.raw"
    with recording.open("wb") as out:
        recorder = subprocess.Popen(
            [
                *("parec", "-d", f"{SINK}.monitor", "--format=s16le"),
                *(f"--rate={RECORD_RATE}", "--channels=1", "--latency-msec=20"),
            ],
            env=sound_server.env,
            stdout=out,
        )
        try:
            # Nothing plays before the recording stream delivers audio.
            deadline = time.monotonic() + 15
            while recording.stat().st_size < RECORD_RATE // 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            player = subprocess.run(
                [sys.executable, "-c", PLAYER, str(config), cue],
                env=sound_server.env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=60,
            )
            time.sleep(0.5)
        finally:
            recorder.terminate()
            recorder.wait(10)
    assert player.returncode == 0, player.stderr
    assert "Traceback" not in player.stderr
    samples = np.frombuffer(recording.read_bytes(), dtype="<i2").astype(np.float64)
    return json.loads(player.stdout), samples


def peak_dbfs(samples: np.ndarray) -> float:
    peak = float(np.max(np.abs(samples))) if samples.size else 0.0
    return 20 * np.log10(max(peak, 1.0) / 32768)


def dominant_frequency(samples: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / RECORD_RATE)[np.argmax(spectrum)])


def test_the_shipped_accepted_cue_is_heard_in_the_sink(sound_server: Pulse, tmp_path: Path) -> None:
    result, samples = play_and_record(
        sound_server, write_config(tmp_path, "enabled = true"), "accepted", tmp_path
    )
    assert result["enabled"] and result["played"] == 1
    # The shipped cue is one 1046.5 Hz (C6) blip at -9 dBFS.
    assert peak_dbfs(samples) > -15, peak_dbfs(samples)
    assert abs(dominant_frequency(samples) - 1046.5) < 15
    # The cue was handed over, not played, in the caller's thread.
    assert result["call"] < 0.005, result
    print(f"peak {peak_dbfs(samples):.1f} dBFS, call {result['call'] * 1e6:.0f} us")


def test_a_configured_wav_at_another_rate_is_heard_at_its_pitch(
    sound_server: Pulse, tmp_path: Path
) -> None:
    beep = tone_wav(tmp_path / "beep.wav", 600.0, rate=8000)
    config = write_config(tmp_path, 'enabled = true\nwake = "beep.wav"')
    result, samples = play_and_record(sound_server, config, "wake", tmp_path)
    assert result == {"enabled": True, "played": 1, "call": result["call"]}
    assert peak_dbfs(samples) > -15
    assert abs(dominant_frequency(samples) - 600.0) < 15, beep


def test_silence_when_nothing_plays(sound_server: Pulse, tmp_path: Path) -> None:
    # The control for the two above: with feedback off, the monitor hears nothing at all.
    result, samples = play_and_record(
        sound_server, write_config(tmp_path, "enabled = false"), "accepted", tmp_path
    )
    assert result["played"] == 0
    assert samples.size >= RECORD_RATE // 10
    assert peak_dbfs(samples) < -80


def test_no_output_device_turns_feedback_off_with_one_warning(tmp_path: Path) -> None:
    # A sound server that is not there: PortAudio finds no output device at all.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PULSE_", "ALSA_"))}
    env["PULSE_SERVER"] = f"unix:{tmp_path / 'no-such-socket'}"
    player = subprocess.run(
        [sys.executable, "-c", PLAYER, str(write_config(tmp_path, "enabled = true")), "wake"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert player.returncode == 0, player.stderr
    assert json.loads(player.stdout)["enabled"] is False
    (line,) = player.stderr.splitlines()
    assert line.startswith("feedback sounds off: no output device ("), line


def test_shipped_sounds_are_short_small_16_bit_wavs() -> None:
    for cue in CUES:
        path = default_sound(cue)
        sound = read_sound(path)
        assert path.stat().st_size < 20_000
        assert sound.samples.dtype == np.int16 and sound.samples.shape[1] == 1
        assert 0.05 < sound.seconds < 0.5
        assert 0.1 < np.abs(sound.samples).max() / 32768 < 0.9  # audible, not clipped


def test_resampling_keeps_duration_and_pitch() -> None:
    sound = read_sound(tone_wav(Path("/tmp") / f"tone-{os.getpid()}.wav", 440.0, 8000, 1.0))
    up = sound.resampled(48000)
    assert up.rate == 48000 and len(up.samples) == 48000
    spectrum = np.abs(np.fft.rfft(up.samples[:, 0].astype(np.float64)))
    assert abs(np.fft.rfftfreq(48000, 1 / 48000)[np.argmax(spectrum)] - 440.0) < 2


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "cannot read: No such file or directory"),
        (b"not a wav", "not a WAV file (no RIFF/WAVE header)"),
        ("8-bit", "not a 16-bit PCM WAV file (sample width 1 byte)"),
        ("empty", "no audio in it"),
    ],
)
def test_a_bad_wav_in_the_config_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: object, problem: str
) -> None:
    wav_path = tmp_path / "cue.wav"
    if isinstance(content, bytes):
        wav_path.write_bytes(content)
    elif content is not None:
        with wave.open(str(wav_path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(1 if content == "8-bit" else 2)
            wav.setframerate(8000)
            wav.writeframes(b"\x80" * 100 if content == "8-bit" else b"")
    config = write_config(tmp_path, 'enabled = true\naccepted = "cue.wav"')
    status = main(["run", "--config", str(config), "--outbox", str(tmp_path / "o.sqlite")])
    captured = capsys.readouterr()
    assert status == 2
    assert captured.out == ""
    assert captured.err == (
        f"voice-agent: error: {config}: feedback.accepted: {wav_path}: {problem}\n"
    )
    # The same check holds with feedback off: a wrong path is wrong either way.
    config.write_text(config.read_text().replace("enabled = true", "enabled = false"))
    with pytest.raises(ConfigError, match=r"feedback\.accepted"):
        load_config(config, environ={})


def test_feedback_is_off_by_default_and_load_names_the_key(tmp_path: Path) -> None:
    config = load_config(None, {"model.path": str(KO_MODEL)}, environ={})
    assert not config.feedback.enabled
    assert (config.feedback.wake, config.feedback.device) == (None, None)
    feedback = Feedback.load(config.feedback)
    assert set(feedback.sounds) == set(CUES)
    feedback.wake()  # not started: a no-op, never an error
    assert feedback.played == 0
    missing = config.feedback.__class__(enabled=True, rejected=tmp_path / "gone.wav")
    with pytest.raises(FeedbackError, match=r"^x.toml: feedback.rejected: .*gone.wav: cannot"):
        Feedback.load(missing, "x.toml")


class Heard:
    """The cues the daemon gave, in order (the Cues protocol, recorded)."""

    def __init__(self) -> None:
        self.cues: list[str] = []

    def wake(self) -> None:
        self.cues.append("wake")

    def accepted(self) -> None:
        self.cues.append("accepted")

    def rejected(self) -> None:
        self.cues.append("rejected")


def test_the_daemon_cues_wake_accepted_and_rejected(
    broker: Mosquitto, korean_speech: SpeechFactory, tmp_path: Path
) -> None:
    wake = WakeGate("비서", 5.0)
    recognizer = Recognizer(
        RecognizerSettings(packaged_model_dir(), wake.grammar(load_grammar(KO_MODEL)))
    )
    link = MqttLink(MqttSettings(HOST, broker.port, client_id="test-feedback"))
    link.start()
    try:
        assert link.wait_connected(10)
        heard = Heard()
        daemon = Daemon(recognizer, IntentClassifier.load(KO_MODEL), link, wake=wake, cues=heard)
        folder = tmp_path / "wav"
        folder.mkdir()
        phrases = ["비서", "부엌 불 끄기", "비서", "오늘 날씨 어때", "노래 정지"]
        for number, phrase in enumerate(phrases):
            shutil.copy(korean_speech(phrase).path, folder / f"{number:02d}.wav")
        outcomes = list(daemon.listen(wav_folder_source(folder)))
    finally:
        link.stop()
    # The last command came after the window had been used: no wake phrase, no cue at all.
    assert [o.decision.transcript.text for o in outcomes] == ["부엌 불 끄기", "오늘 날씨 어때"]
    assert heard.cues == ["wake", "accepted", "wake", "rejected"]


def test_a_malformed_or_ragged_wav_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # What fuzzing found in agent.audio holds for cues too: a fmt chunk shorter than its
    # fields, and a stereo data chunk that ends in half a frame.
    short = tmp_path / "short.wav"
    short.write_bytes(b"RIFF\x20\0\0\0WAVEfmt \x02\0\0\0\1\0")
    truncated = r"short\.wav: truncated WAV file \(header ends early\)$"
    with pytest.raises(FeedbackError, match=truncated):
        read_sound(short)
    ragged = tmp_path / "ragged.wav"
    with wave.open(str(ragged), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(8000)
        wav.writeframes(b"\1\0" * 1001)  # 500 stereo frames and half of another
    assert read_sound(ragged).samples.shape == (500, 2)


# A microphone that went away makes the audio loop re-initialize PortAudio every retry
# (agent.audio: to see a replugged device); text commands can cue sounds meanwhile.
RACER = """
import json, sys, threading, time
from contextlib import ExitStack
from pathlib import Path
from agent.audio import PortAudio
from agent.config import load_config
from agent.feedback import start_feedback
config = load_config(Path(sys.argv[1]), environ={})
portaudio = PortAudio()
done = threading.Event()
def refresh():
    while not done.is_set():
        portaudio.reinitialize()
        time.sleep(0.01)
with ExitStack() as stack:
    feedback = start_feedback(config, stack, portaudio)
    thread = threading.Thread(target=refresh)
    thread.start()
    for _ in range(8):
        feedback.accepted()
        time.sleep(0.35)
    done.set()
    thread.join()
    during, settled = feedback.played, time.monotonic()
    while time.monotonic() - settled < 2.0:  # a cue still waiting plays meanwhile
        time.sleep(0.1)
        if feedback.played != during:
            during, settled = feedback.played, time.monotonic()
    feedback.accepted()  # after the last re-initialization, on the looked-up device
    deadline = time.monotonic() + 10
    while feedback.played == during and time.monotonic() < deadline:
        time.sleep(0.05)
print(json.dumps({"enabled": feedback.enabled, "during": during, "played": feedback.played,
                  "reinitialized": portaudio.generation}))
"""


def test_playback_survives_portaudio_being_reinitialized_meanwhile(
    sound_server: Pulse, tmp_path: Path
) -> None:
    blip = tone_wav(tmp_path / "blip.wav", 880, 48000, 0.1)
    config = write_config(tmp_path, f'enabled = true\naccepted = "{blip}"')
    player = subprocess.run(
        [sys.executable, "-c", RACER, str(config)],
        env=sound_server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert player.returncode == 0, player.stderr
    result = json.loads(player.stdout)
    # Cues that come while PortAudio is being initialized are dropped, not played late.
    assert result["enabled"] and result["reinitialized"] >= 2, (result, player.stderr)
    assert result["during"] >= 1 and result["played"] == result["during"] + 1, result
