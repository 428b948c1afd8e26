"""The microphone path with a real sound server: PulseAudio, PortAudio, ALSA's pulse plugin.

Each module run starts its own PulseAudio daemon (private runtime dir, no system config) with
a null sink whose monitor is the default source, so whatever paplay plays into the sink is
what a microphone hears. Capture runs in a helper process (microphone_capture.py) because
PortAudio reads the sound server's environment once per process.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from speech import korean_speech_fixture  # noqa: F401 - registers the fixture

ROOT = Path(__file__).resolve().parents[2]
HELPER = Path(__file__).with_name("microphone_capture.py")
KO_INTENTS = ROOT / "models" / "smart-home-ko"
PHRASES = ["노래 정지", "너 이름이 뭐야"]
"""Phrases the word grammar of smart-home-ko decodes exactly (see test_recognizer.py)."""
SINK = "speaker"


@dataclass(frozen=True)
class Pulse:
    """A running PulseAudio daemon and the environment its clients need."""

    env: dict[str, str]
    log: Path


def _wait_for_server(process: subprocess.Popen[bytes], env: dict[str, str], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"pulseaudio exited with {process.returncode}:\n{log.read_text()}")
        info = subprocess.run(["pactl", "info"], env=env, capture_output=True, text=True)
        if info.returncode == 0 and f"Default Source: {SINK}.monitor" in info.stdout:
            return
        time.sleep(0.1)
    pytest.fail(f"pulseaudio did not start within 15 s:\n{log.read_text()}")


@pytest.fixture(scope="module")
def pulse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pulse]:
    missing = [tool for tool in ("pulseaudio", "pactl", "paplay") if shutil.which(tool) is None]
    if missing:
        pytest.skip(
            f"missing {missing}: apt-get install pulseaudio pulseaudio-utils libasound2-plugins"
        )
    root = tmp_path_factory.mktemp("pulse")
    runtime, home = root / "run", root / "home"
    runtime.mkdir(mode=0o700)
    home.mkdir()
    script = root / "default.pa"
    # -n skips the system default.pa: only what the test needs, nothing touching real hardware.
    # auth-anonymous spares the clients the cookie (they share HOME anyway).
    script.write_text(
        "load-module module-native-protocol-unix auth-anonymous=1\n"
        f"load-module module-null-sink sink_name={SINK}\n"
        f"set-default-sink {SINK}\n"
        f"set-default-source {SINK}.monitor\n"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PULSE_", "ALSA_", "DBUS_")) and key != "DISPLAY"
    }
    env |= {
        "HOME": str(home),
        "XDG_RUNTIME_DIR": str(runtime),
        "PULSE_RUNTIME_PATH": str(runtime / "pulse"),
        "PULSE_SERVER": f"unix:{runtime / 'pulse' / 'native'}",
    }
    log = root / "pulseaudio.log"
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            [
                "pulseaudio",
                "-n",
                "-F",
                str(script),
                "--daemonize=no",
                "--exit-idle-time=-1",
                "--use-pid-file=no",
                "--log-target=stderr",
            ],
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_for_server(process, env, log)
        yield Pulse(env, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class _Lines:
    """The stdout lines of a process, readable with a timeout; its stderr goes to ``log``."""

    def __init__(self, process: subprocess.Popen[str], log: Path) -> None:
        self.lines: queue.Queue[str] = queue.Queue()
        self.log = log
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(target=lambda: [self.lines.put(x) for x in stream], daemon=True).start()

    def next(self, timeout: float) -> str:
        try:
            return self.lines.get(timeout=timeout).rstrip("\n")
        except queue.Empty:
            pytest.fail(f"no output within {timeout:g} s; stderr:\n{self.log.read_text()}")


def _padded(wav: Path, into: Path) -> Path:
    """``wav`` with half a second of silence around it, as speech into a microphone has.

    Without the lead-in the first syllable sometimes goes missing while paplay's new stream
    starts up in the sink, and the transcript changes from run to run.
    """
    out = into / f"padded-{wav.name}"
    subprocess.run(["sox", str(wav), str(out), "pad", "0.5", "0.5"], check=True)
    return out


def _capture(pulse: Pulse, log: Path, *args: str) -> subprocess.Popen[str]:
    """The capture helper on the PulseAudio device, its stderr in ``log`` (a file, not a
    pipe: a full pipe would stall the helper)."""
    with log.open("w") as errors:
        return subprocess.Popen(
            [
                *(sys.executable, str(HELPER), "--device", "pulse", "--grammar", str(KO_INTENTS)),
                *args,
            ],
            env=pulse.env,
            stdout=subprocess.PIPE,
            stderr=errors,
            text=True,
        )


def test_speech_played_into_the_sink_is_transcribed(
    pulse: Pulse, korean_speech, tmp_path: Path
) -> None:
    log = tmp_path / "helper.log"
    helper = _capture(pulse, log, "--utterances", str(len(PHRASES)), "--seconds", "60")
    try:
        lines = _Lines(helper, log)
        # Synthesized while the helper loads the Vosk model.
        wavs = [_padded(korean_speech(phrase).path, tmp_path) for phrase in PHRASES]
        ready = lines.next(timeout=30)
        assert ready.startswith("ready pulse "), ready
        heard: list[str] = []
        for wav in wavs:
            started = time.monotonic()
            subprocess.run(["paplay", str(wav)], env=pulse.env, check=True, timeout=30)
            text = ""
            while not text:  # an utterance of pure silence may end with an empty transcript
                text = json.loads(lines.next(timeout=15))["text"]
            heard.append(text)
            print(f"{wav.name}: {text} after {time.monotonic() - started:.1f} s")
        assert heard == PHRASES
        assert helper.wait(timeout=10) == 0, log.read_text()
    finally:
        if helper.poll() is None:
            helper.kill()
        helper.wait()
    assert "Traceback" not in log.read_text(), log.read_text()


def _devices(env: dict[str, str], *prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "agent", "devices"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_devices_lists_the_pulse_device(pulse: Pulse) -> None:
    result = _devices(pulse.env)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr
    header, *rows, footer = result.stdout.splitlines()
    assert header.split() == ["INDEX", "NAME", "CHANNELS", "RATE"]
    assert footer.startswith("(* = default input")
    devices = {}
    for row in rows:
        index, *name, channels, rate = row[1:].split()
        devices[" ".join(name)] = (int(index), int(channels), int(rate))
    index, channels, rate = devices["pulse"]
    assert index >= 0 and channels >= 1 and rate > 0
    assert [row[0] for row in rows].count("*") == 1, "exactly one default input"


def test_devices_without_portaudio_is_one_line(tmp_path: Path) -> None:
    # Hiding the linker cache in a private mount namespace makes PortAudio unfindable, as on
    # a machine without libportaudio2, without touching the real system.
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare(1) to hide the library in a mount namespace")
    empty = tmp_path / "ld.so.cache"
    empty.write_bytes(b"")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    wrapper = ["unshare", "-m", "sh", "-c", f'mount --bind {empty} /etc/ld.so.cache && exec "$@"']
    result = _devices(dict(os.environ), *wrapper, "sh")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr == (
        "voice-agent: error: cannot list sound devices: PortAudio library not found"
        " (install PortAudio: apt-get install libportaudio2)\n"
    )


def _pactl(pulse: Pulse, *args: str) -> None:
    subprocess.run(["pactl", *args], env=pulse.env, check=True, capture_output=True, timeout=10)


def _wait_for_text(path: Path, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        if time.monotonic() > deadline:
            pytest.fail(f"no {text!r} within {timeout:g} s:\n{path.read_text()}")
        time.sleep(0.1)


def test_an_unplugged_microphone_is_reopened_when_it_comes_back(
    pulse: Pulse, korean_speech, tmp_path: Path
) -> None:
    """Unplug = unload the sink whose monitor is the microphone; replug = load it again under
    the same name. The source keeps yielding (gaps while the device is away), finds the
    device again and the speech played afterwards is transcribed: no restart needed."""
    log = tmp_path / "helper.log"
    helper = _capture(pulse, log, "--utterances", "1", "--seconds", "90", "--levels")
    try:
        lines = _Lines(helper, log)
        wav = _padded(korean_speech(PHRASES[0]).path, tmp_path)
        first = lines.next(timeout=30)
        while first == "gap":  # a slow start (a loaded machine): the source said it is waiting
            first = lines.next(timeout=30)
        assert first.startswith("ready pulse ")
        _pactl(pulse, "unload-module", "module-null-sink")
        unplugged = time.monotonic()
        _wait_for_text(log, "microphone pulse: the stream stopped (device unplugged?)", 10)
        assert lines.next(timeout=5) == "gap"  # the consumer's loop keeps turning
        time.sleep(2.0)
        _pactl(pulse, "load-module", "module-null-sink", f"sink_name={SINK}")
        _pactl(pulse, "set-default-sink", SINK)
        _pactl(pulse, "set-default-source", f"{SINK}.monitor")
        _wait_for_text(log, "INFO agent.audio: microphone pulse is back", 15)
        print(f"back {time.monotonic() - unplugged:.1f} s after the unplug")
        subprocess.run(["paplay", str(wav)], env=pulse.env, check=True, timeout=30)
        seen = []
        while not (seen and seen[-1].startswith("{")):
            seen.append(lines.next(timeout=15))
        assert any(line.startswith("level ") for line in seen)  # the replugged device's audio
        assert json.loads(seen[-1])["text"] == PHRASES[0]
        assert helper.wait(timeout=10) == 0, log.read_text()
    finally:
        if helper.poll() is None:
            helper.kill()
        helper.wait()
    text = log.read_text()
    assert text.count("closing it and looking for it again") == 1, text
    assert text.count("is back") == 1, text
    assert "Traceback" not in text, text
