"""The security claims of SECURITY.md that other tests do not already prove.

Run for real: the daemon as a child process (`python -m agent run`) logging in to a
mosquitto that wants a password, at debug level, with the password from a file, the
environment or a private config file; and the MQTT link against a TLS broker whose
certificate the system's trust store does not know.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from speech import SpeechFactory, korean_speech_fixture  # noqa: F401 - registers the fixture

from agent.config import ConfigError, load_config
from agent.mqtt import MqttLink, MqttSettings
from agent.recognizer import packaged_model_dir
from tests.agent.broker import (  # noqa: F401
    HOST,
    PASSWORD,
    USERNAME,
    Mosquitto,
    Subscriber,
    auth_broker,
    tls_broker,
)

ROOT = Path(__file__).resolve().parents[2]
KO_MODEL = ROOT / "models" / "smart-home-ko"
LIGHT_ON = "부엌 조명 좀 켜줘"


def config_text(port: int, outbox: Path, wav: Path, secret: str) -> str:
    return f"""[model]
path = "{KO_MODEL}"
[vosk]
model = "{packaged_model_dir()}"
[audio]
source = "wav"
wav = "{wav}"
[wake]
engine = "none"
[mqtt]
host = "{HOST}"
port = {port}
site_id = "secure"
username = "{USERNAME}"
{secret}
[outbox]
path = "{outbox}"
[log]
level = "debug"
"""


@pytest.mark.parametrize("where", ["password_file", "password_env", "password"])
def test_the_password_is_never_logged_nor_in_argv(
    auth_broker: Mosquitto,  # noqa: F811
    korean_speech: SpeechFactory,
    tmp_path: Path,
    where: str,
) -> None:
    """A command heard and acknowledged by a broker that wants the password (so it was
    used), with debug logging: the password is in neither the log nor /proc/PID/cmdline."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(PASSWORD + "\n")
    secret_file.chmod(0o600)
    secret = {
        "password_file": f'password_file = "{secret_file}"',
        "password_env": 'password_env = "VOICE_AGENT_TEST_SECRET"',
        "password": f'password = "{PASSWORD}"',
    }[where]
    wav = korean_speech(LIGHT_ON).path
    config = tmp_path / "config.toml"
    config.write_text(config_text(auth_broker.port, tmp_path / "outbox.sqlite", wav, secret))
    config.chmod(0o600)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "VOICE_AGENT_TEST_SECRET": PASSWORD}
    command = [sys.executable, "-m", "agent", "run", "--config", str(config), "--once"]
    with Subscriber(auth_broker.port, "zigbee2mqtt/#", username=USERNAME, password=PASSWORD) as sub:
        process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        argv_seen: list[bytes] = []
        while process.poll() is None:
            try:
                argv = Path(f"/proc/{process.pid}/cmdline").read_bytes()
            except OSError:
                break
            if argv:  # empty once the process has exited (a zombie)
                argv_seen.append(argv)
            time.sleep(0.05)
        out, err = process.communicate(timeout=120)
        log = err.decode("utf-8", "replace")
        assert process.returncode == 0, log
        action = sub.wait_for("zigbee2mqtt/kitchen_light/set", timeout=10)
    assert action.payload == b'{"state":"ON"}'
    assert "DEBUG" in log and "connected to MQTT broker" in log
    assert argv_seen and all(b"agent" in argv for argv in argv_seen)
    for text in (log, out.decode("utf-8", "replace"), *(a.decode() for a in argv_seen)):
        assert PASSWORD not in text


def test_run_has_no_option_that_takes_a_secret() -> None:
    """Nothing secret can be put on the command line, where `ps` shows it to every user."""
    done = subprocess.run(
        [sys.executable, "-m", "agent", "run", "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    options = set(re.findall(r"--[a-z-]+", done.stdout))
    assert "--config" in options and "--host" in options
    assert not {o for o in options if re.search("pass|secret|token|key", o)}


def test_tls_without_a_ca_file_verifies_against_the_system_store(
    tls_broker: Mosquitto,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`tls = true` and no ca_file: the broker's test CA is in no system store, so the link
    must refuse it (and say why) rather than connect unverified."""
    caplog.set_level(logging.DEBUG, logger="agent.mqtt")
    settings = MqttSettings(
        "localhost", tls_broker.port, tls=True, site_id="system-store",
        reconnect_min=0.1, reconnect_max=0.5,
    )  # fmt: skip
    assert settings.ca_file is None
    link = MqttLink(settings)
    link.start()
    try:
        deadline = time.monotonic() + 10
        while not any("certificate verify failed" in m for m in caplog.messages):
            assert time.monotonic() < deadline, caplog.messages
            time.sleep(0.05)
        assert not link.wait_connected(1.0)
    finally:
        link.stop()


@pytest.mark.parametrize("key", ["tls_insecure", "insecure", "verify", "check_hostname"])
def test_there_is_no_insecure_switch(tmp_path: Path, key: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(f'[model]\npath = "{KO_MODEL}"\n[mqtt]\ntls = true\n{key} = false\n')
    with pytest.raises(ConfigError, match=f"unknown key 'mqtt.{key}'"):
        load_config(path, environ={})


def test_no_code_turns_verification_off() -> None:
    """The agent's sources never disable certificate or host name checks."""
    pattern = re.compile(
        r"tls_insecure_set|CERT_NONE|check_hostname\s*=\s*False|_create_unverified"
    )
    offenders = [
        f"{path.name}:{number}"
        for path in sorted((ROOT / "agent").glob("*.py"))
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
