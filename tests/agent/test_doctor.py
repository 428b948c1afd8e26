"""``voice-agent doctor`` against real things: the Korean models, a real mosquitto (plain, with a
password file, with TLS), PulseAudio's null sink as the microphone, and real files whose
permissions are wrong. Every report is checked line by line."""

from __future__ import annotations

import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_microphone import Pulse, pulse  # noqa: F401 - the PulseAudio fixture

from agent.broker import free_port
from agent.doctor import Check, check_broker, check_config_permissions, run_doctor
from agent.recognizer import packaged_model_dir
from tests.agent.broker import HOST, PASSWORD, USERNAME, Certificates, Mosquitto

ROOT = Path(__file__).resolve().parents[2]
KO_MODEL = ROOT / "models" / "smart-home-ko"
VOSK = packaged_model_dir()


@pytest.fixture(scope="module")
def sound_server(pulse: Pulse) -> Pulse:  # noqa: F811 - the imported fixture
    """A private PulseAudio whose default source is the monitor of a null sink."""
    return pulse


def write_config(directory: Path, *sections: str, vosk: Path = VOSK, decoder: str = "") -> Path:
    path = directory / "config.toml"
    path.write_text(
        f'[model]\npath = "{KO_MODEL}"\n[vosk]\nmodel = "{vosk}"\n{decoder}'
        f'[outbox]\npath = "state/outbox.sqlite"\n' + "\n".join(sections) + "\n"
    )
    path.chmod(0o600)
    return path


def broker_section(port: int, *lines: str) -> str:
    return "\n".join((f'[mqtt]\nhost = "{HOST}"\nport = {port}', *lines))


def wav_section(tmp_path: Path) -> str:
    # The level meter needs a sound device; these runs are about the other checks.
    wav = tmp_path / "speech.wav"
    subprocess.run(
        ["sox", "-n", "-r", "16000", "-b", "16", str(wav), "trim", "0", "0.1"], check=True
    )
    return f'[audio]\nsource = "wav"\nwav = "{wav}"'


def assert_lines(report: str, expected: list[str]) -> None:
    """Each line of ``report`` matches the regular expression at the same place."""
    lines = report.splitlines()
    assert len(lines) == len(expected), report
    for line, pattern in zip(lines, expected, strict=True):
        assert re.fullmatch(pattern, line), f"{line!r} !~ {pattern!r}\n{report}"


def E(text: str) -> str:
    """A literal line part."""
    return re.escape(text)


WAKE = '✓ wake word: okay_nabu ("Okay Nabu", cutoff 0.85) (wake.engine = micro)'
HEAD = [
    r"✓ python: 3\.\d+\.\d+ \(.+\)",
    r"✓ packages: voice-agent [\d.]+, numpy [\d.]+, vosk [\d.]+, paho-mqtt [\d.]+,"
    r" sounddevice [\d.]+",
]


def models(config: Path) -> list[str]:
    return [
        "✓ config: " + E(str(config)),
        r"✓ tflite runtime: (tflite_runtime|ai_edge_litert) [\d.]+ \(model\.runtime = auto\)",
        E("✓ intent model: smart-home-ko version 1 (ko, 4 intents, threshold ")
        + r"0\.\d\d"
        + E(f") in {KO_MODEL}"),
        E(f"✓ vosk model: {VOSK} (16000 Hz, loaded in ") + r"\d+\.\d" + E(" s)"),
        # A finding of the doctor: three words of the Korean grammar are not in the Korean
        # Vosk model's vocabulary, so the sentences with them can never be heard.
        E(
            "✓ grammar: 159 of 190 entries can be heard; Vosk does not know 꺼줘, 재미있는,"
            " 틀어줘, so the 31 with them cannot"
        ),
        E(
            "✓ decoder: beam 10, max-active 3000, lattice-beam 2, endpoint pauses 0.5 / 1 / 2 s,"
            " frames per chunk 20 (the model's conf/model.conf, Kaldi's defaults where it is"
            " silent); sentence pause 0.2 s"
        ),
        E(WAKE),
    ]


def tail(config: Path, tmp_path: Path) -> list[str]:
    return [
        E(f"✓ config permissions: {config} 0600 ") + r"\S+:\S+",
        E(f"✓ state directory: {tmp_path / 'state'} will be created (in {tmp_path}, writable, ")
        + r"\d+\.\d MiB free\)",
        r"✓ systemd: .*\(not checked\)|✓ systemd: voice-agent\.service .*",
    ]


def doctor(config: Path) -> tuple[int, str]:
    out = io.StringIO()
    status = run_doctor(config, {}, out, timeout=3.0)
    return status, out.getvalue()


def test_a_healthy_setup_passes_every_check(
    sound_server: Pulse, broker: Mosquitto, tmp_path: Path
) -> None:
    config = write_config(tmp_path, broker_section(broker.port), '[audio]\ndevice = "pulse"')
    tone = tmp_path / "tone.wav"
    subprocess.run(
        [
            "sox",
            "-n",
            "-r",
            "16000",
            "-b",
            "16",
            str(tone),
            "synth",
            "60",
            "sine",
            "440",
            "vol",
            "0.5",
        ],
        check=True,
    )
    # Someone speaking into the "microphone" for as long as the doctor runs.
    speaker = subprocess.Popen(["paplay", str(tone)], env=sound_server.env)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "agent", "doctor", "--config", str(config)],
            env=sound_server.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        speaker.kill()
        speaker.wait()
    assert_lines(
        result.stdout,
        [
            *HEAD,
            *models(config),
            r"✓ audio input: pulse \(index \d+\), peak -[0-9]\.\d dBFS over 2 s",
            E(f"✓ broker: {HOST}:{broker.port} reachable (") + r"\d+ ms\)",
            E("✓ tls: off (mqtt.tls = false)"),
            E("✓ authentication: logged in anonymously"),
            *tail(config, tmp_path),
            "all checks passed",
        ],
    )
    assert result.returncode == 0
    assert "Traceback" not in result.stderr
    print(result.stdout)


def test_a_silent_microphone_fails(sound_server: Pulse, tmp_path: Path) -> None:
    config = write_config(tmp_path, broker_section(free_port()), '[audio]\ndevice = "pulse"')
    result = subprocess.run(
        [sys.executable, "-m", "agent", "doctor", "--config", str(config), "--seconds", "1"],
        env=sound_server.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    audio = [line for line in result.stdout.splitlines() if "audio input" in line]
    assert len(audio) == 1 and re.fullmatch(
        r"✗ audio input: pulse \(index \d+\), peak -90\.3 dBFS over 1 s: silent"
        r" — is the input muted\? \(alsamixer, F4\)",
        audio[0],
    ), result.stdout + result.stderr


def test_a_missing_vosk_model(broker: Mosquitto, tmp_path: Path) -> None:
    missing = tmp_path / "vosk-model-small-en-us-0.15"
    config = write_config(
        tmp_path, broker_section(broker.port), wav_section(tmp_path), vosk=missing
    )
    status, report = doctor(config)
    assert status == 1
    assert_lines(
        report,
        [
            *HEAD,
            *models(config)[:3],
            E(
                f"✗ vosk model: {missing}: Vosk model directory does not exist — voice-agent"
                " models fetch vosk-model-small-en-us-0.15 (or set vosk.model to the model's"
                " folder)"
            ),
            E("✗ grammar: 190 entries, not checked — fix the Vosk model first"),
            E(WAKE),
            r"✓ audio input: WAV files from .*speech\.wav \(audio\.source = wav\)",
            r"✓ broker: .*",
            r"✓ tls: .*",
            r"✓ authentication: .*",
            *tail(config, tmp_path),
            "2 checks failed",
        ],
    )


def test_decoder_settings_show_what_the_config_changed(broker: Mosquitto, tmp_path: Path) -> None:
    # What a Pi 3 user tunes: the report says which values are theirs and which the model's.
    config = write_config(
        tmp_path,
        broker_section(broker.port),
        wav_section(tmp_path),
        decoder="beam = 8\nframes_per_chunk = 50\ntrailing_silence = 0.3\nsentence_pause = 0\n",
    )
    status, report = doctor(config)
    assert status == 0, report
    decoder = [line for line in report.splitlines() if line.startswith("✓ decoder:")]
    assert decoder == [
        "✓ decoder: beam 8, max-active 3000, lattice-beam 2, endpoint pauses 0.3 / 0.3 / 0.3 s,"
        " frames per chunk 50 (set in the config: beam, endpoint pauses, frames per chunk; the"
        " rest: the model's conf/model.conf, Kaldi's defaults where it is silent); sentence"
        " pause 0 s"
    ]


def test_a_missing_intent_model_stops_at_the_configuration(tmp_path: Path) -> None:
    config = write_config(tmp_path)
    config.write_text(config.read_text().replace(str(KO_MODEL), str(tmp_path / "nope")))
    status, report = doctor(config)
    assert status == 1
    assert_lines(
        report,
        [
            *HEAD,
            E(
                f"✗ config: {config}: model.path: {tmp_path / 'nope'}: not a model directory"
                " (no model.json) — set model.path to a directory made by 'voice-agent convert'"
            ),
            "1 check failed",
        ],
    )


def test_broker_down(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = write_config(tmp_path, broker_section(port), wav_section(tmp_path))
    status, report = doctor(config)
    assert status == 1
    lines = report.splitlines()
    broker_lines = lines[lines.index(next(x for x in lines if "broker:" in x)) :][:3]
    assert broker_lines == [
        f"✗ broker: {HOST}:{port}: connection refused (is the broker running?)"
        " — start the broker, or check mqtt.host and mqtt.port",
        "✗ tls: not checked (broker unreachable) — fix the broker first",
        "✗ authentication: not checked (broker unreachable) — fix the broker first",
    ]
    assert lines[-1] == "3 checks failed"


def test_wrong_password(auth_broker: Mosquitto, tmp_path: Path) -> None:
    secret = tmp_path / "password"
    secret.write_text("not-the-password\n")
    secret.chmod(0o600)
    mqtt = broker_section(
        auth_broker.port, f'username = "{USERNAME}"', 'password_file = "password"'
    )
    config = write_config(tmp_path, mqtt, wav_section(tmp_path))
    status, report = doctor(config)
    assert status == 1
    lines = [line for line in report.splitlines() if not line.startswith("✓")]
    assert lines == [
        f"✗ authentication: {HOST}:{auth_broker.port}: not authorized (logging in as 'agent')"
        " — check mqtt.username and the password (mqtt.password_file / password_env)",
        "1 check failed",
    ]
    # The right one passes, and a world-readable password file is the next failure.
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o644)
    status, report = doctor(config)
    lines = [line for line in report.splitlines() if not line.startswith("✓")]
    assert lines == [
        f"✗ config permissions: {secret} holds the MQTT password and is world-readable (0644)"
        f" — chmod 600 {secret}",
        "1 check failed",
    ]
    assert "✓ authentication: logged in as 'agent'" in report.splitlines()


def test_tls_verified_and_wrong_ca(
    tls_broker: Mosquitto, certificates: Certificates, tmp_path: Path
) -> None:
    from agent.config import load_config

    def tls_checks(ca: Path) -> list[Check]:
        mqtt = broker_section(tls_broker.port, "tls = true", f'ca_file = "{ca}"')
        config = load_config(write_config(tmp_path, mqtt), environ={})
        return check_broker(config, 3.0)

    ok = [c.line() for c in tls_checks(certificates.ca)]
    assert ok[1:] == [
        "✓ tls: TLSv1.3, certificate of localhost verified for 127.0.0.1",
        "✓ authentication: logged in anonymously",
    ]
    wrong = [c.line() for c in tls_checks(certificates.wrong_ca)]
    # OpenSSL's words depend on whether the broker sends its CA along with its certificate.
    assert_lines(
        "\n".join(wrong[1:]),
        [
            E("✗ tls: TLS certificate verify failed: ")
            + "(unable to get local issuer certificate|self-signed certificate in certificate"
            " chain)"
            + E(
                " — check mqtt.ca_file (the CA that signed the broker's certificate) and that"
                " the certificate names mqtt.host"
            ),
            E("✗ authentication: not checked (TLS failed) — fix TLS first"),
        ],
    )


def test_a_world_writable_config(tmp_path: Path) -> None:
    from agent.config import load_config

    path = write_config(tmp_path)
    path.chmod(0o666)
    check = check_config_permissions(load_config(path, environ={}), path)
    assert (
        check.line()
        == f"✗ config permissions: {path} is 0666: anyone can change it — chmod o-w {path}"
    )


def test_a_bad_wake_word_model_fails_its_check(broker: Mosquitto, tmp_path: Path) -> None:
    (tmp_path / "hey_pi.json").write_text('{"model": "hey_pi.tflite", "micro": ', encoding="utf-8")
    config = write_config(
        tmp_path,
        broker_section(broker.port),
        wav_section(tmp_path),
        '[wake]\nmodels = ["okay_nabu", "hey_pi.json"]',
    )
    status, report = doctor(config)
    assert status == 1
    wake = [line for line in report.splitlines() if "wake word" in line]
    assert len(wake) == 1 and wake[0].startswith(
        f"✗ wake word: {tmp_path / 'hey_pi.json'}: not a wake word manifest (invalid JSON"
    ), report
