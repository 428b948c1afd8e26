"""The daemon's configuration: defaults, one-line errors naming file and key, secrets, fuzzing."""

from __future__ import annotations

import json
import math
import os
import re
import socket
import tempfile
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from agent.cli import build_parser, run_overrides
from agent.config import (
    _SCHEMA,
    DEFAULT_TOML,
    SEARCH_PATHS,
    Config,
    ConfigError,
    config_paths,
    find_config,
    load_config,
)
from agent.decision import DecisionSettings
from agent.errors import UsageError
from agent.mqtt import default_site_id, machine_tag
from tests.agent.command import voice_agent

ROOT = Path(__file__).resolve().parents[2]
EN_MODEL = ROOT / "models" / "smart-home-en"
SECRET = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def cwd(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Work in tmp_path, so that the config file is named "config.toml" in messages."""
    if "tmp_path" in request.fixturenames:
        monkeypatch.chdir(request.getfixturevalue("tmp_path"))


def write(folder: Path, text: str, mode: int = 0o600, name: str = "config.toml") -> Path:
    """Write a config file; its name is relative when it is in the working directory."""
    path = folder / name
    path.write_text(text, encoding="utf-8")
    path.chmod(mode)
    return Path(name) if folder == Path.cwd() else path


def error(path: Path | None, **kwargs: object) -> str:
    """The message of the ConfigError that loading raises, checked to be one line."""
    with pytest.raises(ConfigError) as info:
        load_config(path, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert len(message.splitlines()) == 1
    return message


def model_line() -> str:
    return f'[model]\npath = "{EN_MODEL}"\n'


# -- defaults ------------------------------------------------------------------------------


def test_defaults_only_need_an_intent_model() -> None:
    assert error(None, environ={}) == (
        "defaults: model.path: /var/lib/voice-agent/models/smart-home-en:"
        " not a model directory (no model.json)"
    )
    config = load_config(None, {"model.path": EN_MODEL}, environ={})
    assert config.source == "defaults"
    assert config.model.path == EN_MODEL
    assert (config.model.runtime, config.model.threads) == ("auto", 1)
    assert config.vosk.model == Path("/var/lib/voice-agent/vosk/vosk-model-small-en-us-0.15")
    assert (config.vosk.grammar, config.vosk.max_unk_ratio) == (True, 0.5)
    assert (config.wake.phrase, config.wake.window, config.wake.enabled) == ("", 5.0, True)
    wake = config.wake
    assert (wake.engine, wake.models, wake.cutoff, wake.refractory) == (
        "micro",
        ("okay_nabu",),
        None,
        2.0,
    )
    assert (wake.preroll, wake.end_silence, wake.command_timeout) == (0.3, 0.3, 8.0)
    assert config.vosk.decision == DecisionSettings(0.5, 0, 0.0)
    assert (config.model.room, config.model.room_slot, config.model.fill) == ("", "room", {})
    audio = config.audio
    assert (audio.source, audio.device, audio.rate, audio.channels, audio.wav) == (
        "microphone",
        None,
        0,
        0,
        None,
    )
    mqtt = config.mqtt
    assert (mqtt.host, mqtt.port, mqtt.tls, mqtt.username, mqtt.password) == (
        "localhost",
        1883,
        False,
        None,
        None,
    )
    # Derived per machine, so that two Pis on one broker never share a client id.
    assert mqtt.site_id == default_site_id() and mqtt.site_id == socket.gethostname().split(".")[0]
    assert mqtt.client_id == f"voice-agent-{mqtt.site_id}-{machine_tag()}"
    assert re.fullmatch(r"[0-9a-f]{8}", machine_tag())
    assert mqtt.availability_topic == f"voice-agent/{mqtt.site_id}/availability"
    assert (mqtt.keepalive, mqtt.reconnect_min, mqtt.reconnect_max) == (30, 1.0, 60.0)
    assert (config.log.level, config.log.level_number) == ("info", 20)
    with pytest.raises(AttributeError):
        config.model = config.model  # type: ignore[misc]


def test_default_toml_is_the_defaults(tmp_path: Path) -> None:
    document = tomllib.loads(DEFAULT_TOML)
    from_file = load_config(write(tmp_path, DEFAULT_TOML), {"model.path": EN_MODEL}, environ={})
    from_code = load_config(None, {"model.path": EN_MODEL}, environ={})
    assert from_file.source.endswith("config.toml")
    assert {**from_file.__dict__, "source": ""} == {**from_code.__dict__, "source": ""}
    # Every key is documented: set, or commented out where a value would change behaviour.
    mentioned = {
        (section, key)
        for section, table in document.items()
        for key in table  # type: ignore[union-attr]
    }
    current = None
    for line in DEFAULT_TOML.splitlines():
        if header := re.fullmatch(r"\[(\w+)\]", line):
            current = header[1]
        elif commented := re.fullmatch(r"# (\w+) = .*", line):
            mentioned.add((current, commented[1]))
    for field in ("port", "password"):
        assert ("mqtt", field) in mentioned and field not in document["mqtt"]  # type: ignore[operator]
    assert {f"{section}.{key}" for section, key in mentioned} == set(_SCHEMA)


def test_search_order(tmp_path: Path) -> None:
    assert Path("/etc/voice-agent/config.toml") in SEARCH_PATHS
    assert config_paths() == SEARCH_PATHS
    assert config_paths(Path("x.toml")) == (Path("x.toml"),)
    assert find_config(Path("missing.toml")) == Path("missing.toml")
    assert find_config(None, (tmp_path / "nope.toml",)) is None
    there = write(tmp_path, "")
    assert find_config(None, (tmp_path / "nope.toml", there)) == there


# -- values --------------------------------------------------------------------------------


def test_file_values_and_relative_paths(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.pem").write_text("x")
    (tmp_path / "clips").mkdir()
    path = write(
        tmp_path,
        f"""{model_line()}runtime = "tflite_runtime"\nthreads = 2
room = "lounge"\nroom_slot = "area"
[vosk]\nmodel = "vosk"\ngrammar = false\nmax_unk_ratio = 1
sentence_slack = -1\nmin_word_confidence = 0.4
[wake]\nengine = "phrase"\nphrase = "hey pi"\nwindow = 3
[audio]\nsource = "wav"\nwav = "clips"\ndevice = 2\nrate = 16000\nchannels = 1
[mqtt]\nhost = "broker.lan"\ntls = true\nca_file = "certs/ca.pem"\nsite_id = "kitchen"
[log]\nlevel = "debug"
""",
    )
    config = load_config(path, environ={})
    assert config.vosk.model == tmp_path / "vosk"
    assert (config.vosk.grammar, config.vosk.max_unk_ratio) == (False, 1.0)
    assert isinstance(config.vosk.max_unk_ratio, float)
    assert config.vosk.decision == DecisionSettings(1.0, -1, 0.4)
    assert config.model.fill == {"area": "lounge"}  # checked against the model when it loads
    assert (config.wake.phrase, config.wake.window, config.wake.enabled) == ("hey pi", 3.0, True)
    assert config.audio.wav == tmp_path / "clips"
    assert (config.audio.device, config.audio.rate, config.audio.channels) == (2, 16000, 1)
    assert config.mqtt.port == 8883  # tls and no port
    assert config.mqtt.ca_file == str(tmp_path / "certs" / "ca.pem")
    assert config.mqtt.client_id == f"voice-agent-kitchen-{machine_tag()}"
    assert config.log.level_number == 10
    assert load_config(path, {"mqtt.port": 1883}, environ={}).mqtt.port == 1883


def test_cli_overrides_beat_the_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'{model_line()}[mqtt]\nhost = "a.lan"\nport = 1884\n[audio]\ndevice = "hw:1"\n',
    )
    config = load_config(
        path,
        {
            "mqtt.host": "pi.local",
            "audio.device": "USB",
            "mqtt.port": "1885",  # text from a flag is read as the key's type
            "vosk.grammar": "false",
            "wake.window": "2.5",
            "log.level": None,  # a flag that was not given
        },
        environ={},
    )
    assert (config.mqtt.host, config.mqtt.port, config.audio.device) == ("pi.local", 1885, "USB")
    assert (config.vosk.grammar, config.wake.window, config.log.level) == (False, 2.5, "info")
    # Relative paths from the command line stay relative to the working directory.
    config = load_config(path, {"vosk.model": "here/vosk"}, environ={})
    assert config.vosk.model == Path("here/vosk")
    assert error(path, overrides={"mqtt.hots": "x"}, environ={}) == (
        "command line: unknown key 'mqtt.hots' (did you mean 'mqtt.host'?)"
    )
    assert error(path, overrides={"mqtt.port": "abc"}, environ={}) == (
        'command line: mqtt.port: expected an integer from 1 to 65535, got "abc"'
    )


# -- one-line errors, word for word ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[mqtt]\nhots = "pi.local"\n',
            "config.toml: unknown key 'mqtt.hots' (did you mean 'mqtt.host'?)",
        ),
        ("[mqt]\nhost = 1\n", "config.toml: unknown section 'mqt' (did you mean 'mqtt'?)"),
        ('host = "pi"\n', "config.toml: unknown key 'host' (did you mean 'mqtt.host'?)"),
        (
            "[model]\nhost = 1\n",
            "config.toml: unknown key 'model.host' (did you mean 'mqtt.host'?)",
        ),
        (
            "[mqtt]\nzzz = 1\n",
            "config.toml: unknown key 'mqtt.zzz' (known: host, port, client_id, site_id,"
            " username, password, password_file, password_env, tls, ca_file, cert_file,"
            " key_file, keepalive, availability_topic, reconnect_min, reconnect_max, protocol)",
        ),
        ("mqtt = 5\n", "config.toml: mqtt: expected a table ([mqtt]), got 5"),
        (
            '[mqtt]\nport = "abc"\n',
            'config.toml: mqtt.port: expected an integer from 1 to 65535, got "abc"',
        ),
        (
            "[mqtt]\nport = 70000\n",
            "config.toml: mqtt.port: expected an integer from 1 to 65535, got 70000",
        ),
        (
            "[mqtt]\nport = true\n",
            "config.toml: mqtt.port: expected an integer from 1 to 65535, got true",
        ),
        ("[mqtt]\ntls = 1\n", "config.toml: mqtt.tls: expected true or false, got 1"),
        (
            "[vosk]\nsentence_slack = -2\n",
            "config.toml: vosk.sentence_slack: expected -1 (off) or a number of words from 0"
            " to 100, got -2",
        ),
        (
            "[vosk]\nmin_word_confidence = 2\n",
            "config.toml: vosk.min_word_confidence: expected a number from 0 to 1, got 2",
        ),
        (
            '[model]\nroom_slot = ""\n',
            'config.toml: model.room_slot: expected a non-empty string, got ""',
        ),
        (
            "[vosk]\nmax_unk_ratio = 1.5\n",
            "config.toml: vosk.max_unk_ratio: expected a number from 0 to 1, got 1.5",
        ),
        (
            "[vosk]\nframes_per_chunk = -1\n",
            "config.toml: vosk.frames_per_chunk: expected 0 (the model's own) or 10 ms frames"
            " from 1 to 1000, got -1",
        ),
        (
            '[vosk]\nframes_per_chunk = "50"\n',
            "config.toml: vosk.frames_per_chunk: expected 0 (the model's own) or 10 ms frames"
            ' from 1 to 1000, got "50"',
        ),
        (
            "[vosk]\nframes_per_chunk = 100000\n",
            "config.toml: vosk.frames_per_chunk: expected 0 (the model's own) or 10 ms frames"
            " from 1 to 1000, got 100000",
        ),
        (
            "[vosk]\nframes_per_chunk = 1.5\n",
            "config.toml: vosk.frames_per_chunk: expected 0 (the model's own) or 10 ms frames"
            " from 1 to 1000, got 1.5",
        ),
        ("[wake]\nwindow = 0\n", "config.toml: wake.window: expected a number above 0, got 0"),
        ("[wake]\nwindow = inf\n", "config.toml: wake.window: expected a number above 0, got inf"),
        (
            "[model]\nthreads = 0\n",
            "config.toml: model.threads: expected an integer from 1 to 64, got 0",
        ),
        (
            '[model]\nruntime = "tflite"\n',
            'config.toml: model.runtime: expected "auto", "tflite_runtime", "ai_edge_litert"'
            ' or "tensorflow", got "tflite"',
        ),
        (
            '[log]\nlevel = "verbose"\n',
            'config.toml: log.level: expected "debug", "info", "warning" or "error", got "verbose"',
        ),
        (
            "[audio]\nrate = 100\n",
            "config.toml: audio.rate: expected 0 (the device's rate) or a sample rate from"
            " 8000 to 192000, got 100",
        ),
        (
            "[audio]\nchannels = 3\n",
            "config.toml: audio.channels: expected 0 (the device's own), 1 or 2, got 3",
        ),
        (
            "[audio]\ndevice = [1]\n",
            "config.toml: audio.device: expected a device name or an index (integer of at"
            " least 0), got an array",
        ),
        (
            '[mqtt]\nsite_id = "a/b"\n',
            "config.toml: mqtt.site_id: \"a/b\" holds '/', which would add a topic level",
        ),
        (
            '[mqtt]\nsite_id = "den\\u007f"\n',
            'config.toml: mqtt.site_id: "den\\u007f" holds the control character U+007F',
        ),
        (
            '[mqtt]\nsite_id = "#"\n',
            "config.toml: mqtt.site_id: \"#\" holds the MQTT wildcard '#' (not allowed in a"
            " published topic)",
        ),
        (
            f'[mqtt]\nsite_id = "{"é" * 65}"\n',
            f'config.toml: mqtt.site_id: "{"é" * 55}..." is longer than 128 bytes of UTF-8',
        ),
        (
            f'[mqtt]\nclient_id = "{"x" * 70_000}"\n',
            f'config.toml: mqtt.client_id: "{"x" * 55}..." is longer than 256 bytes of UTF-8',
        ),
        (
            '[mqtt]\nclient_id = "pi\\u0000"\n',
            'config.toml: mqtt.client_id: "pi\\u0000" holds the control character U+0000',
        ),
        (
            f'[mqtt]\nusername = "{"u" * 65_536}"\n',
            f'config.toml: mqtt.username: "{"u" * 55}..." is longer than 65535 bytes of UTF-8',
        ),
        (
            f'[mqtt]\nhost = "{"h" * 254}"\n',
            f'config.toml: mqtt.host: expected a host name or address, got "{"h" * 55}..."',
        ),
        (
            '[mqtt]\navailability_topic = "$SYS/x"\n',
            'config.toml: mqtt.availability_topic: expected an MQTT topic, got "$SYS/x", which'
            " starts with '$' (reserved for the broker, like $SYS)",
        ),
        (
            '[query]\ntopic = "hermes/nlu/\\u0001"\n',
            'config.toml: query.topic: expected an MQTT topic, got "hermes/nlu/\\u0001", which'
            " holds the control character U+0001",
        ),
        (
            '[query]\ntopic = "hermes/+/query"\n',
            'config.toml: query.topic: expected an MQTT topic, got "hermes/+/query", which'
            " holds the MQTT wildcard '+' (not allowed in a published topic)",
        ),
        ("[mqtt]\nhost = \n", "config.toml:2: invalid TOML: invalid value (column 8)"),
        (
            "[mqtt]\n\n[mqtt]\n",
            "config.toml:3: invalid TOML: cannot declare ('mqtt',) twice (column 6)",
        ),
        (
            "[model]\nthreads = 1\nthreads = 2",
            "config.toml: invalid TOML: cannot overwrite a value (at end of document)",
        ),
        ("a = " + "1" * 5000, "config.toml: invalid TOML: a number is too long"),
        (
            '[audio]\nsource = "stdin"\n',
            'config.toml: audio.rate: required (not 0) when audio.source = "stdin"',
        ),
        ('[audio]\nsource = "wav"\n', 'config.toml: audio.wav: required when audio.source = "wav"'),
        (
            '[audio]\nsource = "wav"\nwav = "nothing.wav"\n',
            "config.toml: audio.wav: {dir}/nothing.wav: does not exist",
        ),
        (
            "[mqtt]\nreconnect_min = 10\nreconnect_max = 5\n",
            "config.toml: mqtt.reconnect_min: must not exceed mqtt.reconnect_max (10 > 5)",
        ),
        ('[mqtt]\nca_file = "ca.pem"\n', "config.toml: mqtt.ca_file: needs mqtt.tls = true"),
        (
            '[mqtt]\ntls = true\nkey_file = "k.pem"\n',
            "config.toml: mqtt.key_file: needs mqtt.cert_file",
        ),
    ],
)
def test_error_messages(tmp_path: Path, text: str, message: str) -> None:
    # Unless the document is about the model, give it a real one (after it: lines stay put).
    write(tmp_path, text if "[model]" in text else f"{text}\n{model_line()}")
    expected = message.replace("{dir}", str(tmp_path))
    assert error(Path("config.toml"), environ={}) == expected


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, '[mqtt]\nhost = "a"\nport = 18 83\n')
    assert error(path, environ={}) == (
        "config.toml:3: invalid TOML: expected newline or end of document after a statement"
        " (column 11)"
    )


def test_unreadable_or_odd_config_files(tmp_path: Path) -> None:
    assert error(Path("missing.toml"), environ={}) == (
        "missing.toml: cannot read: No such file or directory"
    )
    (tmp_path / "folder.toml").mkdir()
    assert error(Path("folder.toml"), environ={}) == "folder.toml: cannot read: Is a directory"
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'[wake]\nphrase = "caf\xe9"\n')
    assert (
        error(Path("latin1.toml"), environ={})
        == "latin1.toml: not UTF-8 text (bad byte at offset 20)"
    )


def test_missing_model_dir(tmp_path: Path) -> None:
    path = write(tmp_path, '[model]\npath = "/x/y"\n')
    assert error(path, environ={}) == (
        "config.toml: model.path: /x/y: not a model directory (no model.json)"
    )
    relative = write(tmp_path, '[model]\npath = "models/none"\n')
    assert error(relative, environ={}) == (
        f"config.toml: model.path: {tmp_path}/models/none: not a model directory (no model.json)"
    )
    assert error(relative, overrides={"model.path": "/x/y"}, environ={}) == (
        "command line: model.path: /x/y: not a model directory (no model.json)"
    )


def test_tls_files_must_exist(tmp_path: Path) -> None:
    path = write(tmp_path, f'{model_line()}[mqtt]\ntls = true\nca_file = "ca.pem"\n')
    assert error(path, environ={}) == (
        f"config.toml: mqtt.ca_file: {tmp_path}/ca.pem: cannot read: No such file or directory"
    )
    (tmp_path / "ca.pem").write_text("x")
    path = write(
        tmp_path,
        f'{model_line()}[mqtt]\ntls = true\nca_file = "ca.pem"\ncert_file = "/no/cert.pem"\n',
    )
    assert error(path, environ={}) == (
        "config.toml: mqtt.cert_file: /no/cert.pem: cannot read: No such file or directory"
    )


# -- the password ---------------------------------------------------------------------------


def mqtt_login(extra: str) -> str:
    return f'{model_line()}[mqtt]\nusername = "agent"\n{extra}\n'


def test_password_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_text(SECRET + "\n")
    config = load_config(write(tmp_path, mqtt_login('password_file = "secret"')), environ={})
    assert (config.mqtt.username, config.mqtt.password) == ("agent", SECRET)
    assert SECRET not in repr(config) and SECRET not in str(config)


def test_password_from_the_given_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOICE_AGENT_MQTT_PASSWORD", "from-os-environ")
    path = write(tmp_path, mqtt_login('password_env = "VOICE_AGENT_MQTT_PASSWORD"'))
    config = load_config(path, environ={"VOICE_AGENT_MQTT_PASSWORD": SECRET})
    assert config.mqtt.password == SECRET
    assert SECRET not in repr(config)
    assert error(path, environ={}) == (
        "config.toml: mqtt.password_env: environment variable VOICE_AGENT_MQTT_PASSWORD is not set"
    )
    assert error(path, environ={"VOICE_AGENT_MQTT_PASSWORD": ""}) == (
        "config.toml: mqtt.password_env: environment variable VOICE_AGENT_MQTT_PASSWORD is empty"
    )
    # MQTT carries at most 65,535 bytes (a longer one would kill paho's network thread),
    # and only UTF-8 (an environment of stray bytes decodes to lone surrogates).
    for secret, problem in [
        ("p" * 65_536, "the password is longer than MQTT's 65535 bytes"),
        ("p\udcff", "the password is not valid UTF-8"),
    ]:
        assert error(path, environ={"VOICE_AGENT_MQTT_PASSWORD": secret}) == (
            f"config.toml: mqtt.password_env: {problem}"
        )


def test_literal_password_only_in_a_private_file(tmp_path: Path) -> None:
    text = mqtt_login(f'password = "{SECRET}"')
    config = load_config(write(tmp_path, text, mode=0o600), environ={})
    assert config.mqtt.password == SECRET
    assert SECRET not in repr(config)
    assert error(write(tmp_path, text, mode=0o644), environ={}) == (
        "config.toml: holds mqtt.password but is world-readable;"
        " chmod 600 config.toml or use mqtt.password_file"
    )
    # A world-readable file without a secret is fine.
    load_config(write(tmp_path, model_line(), mode=0o644), environ={})


def test_password_file_problems(tmp_path: Path) -> None:
    path = write(tmp_path, mqtt_login('password_file = "/run/secret-missing"'))
    assert error(path, environ={}) == (
        "config.toml: mqtt.password_file: /run/secret-missing: cannot read:"
        " No such file or directory"
    )
    (tmp_path / "empty").write_text("\n")
    path = write(tmp_path, mqtt_login('password_file = "empty"'))
    assert error(path, environ={}) == (
        f"config.toml: mqtt.password_file: {tmp_path}/empty: is empty"
    )
    path = write(tmp_path, f'{model_line()}[mqtt]\npassword_file = "empty"\n')
    assert (
        error(path, environ={}) == "config.toml: mqtt.password_file: a password needs mqtt.username"
    )
    path = write(tmp_path, mqtt_login('password_file = "empty"\npassword_env = "X"'))
    assert error(path, environ={}) == (
        "config.toml: mqtt.password_env: set only one of mqtt.password, mqtt.password_file"
        " and mqtt.password_env (mqtt.password_file is set too)"
    )


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_password_file_unreadable(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    secret.chmod(0)
    path = write(tmp_path, mqtt_login(f'password_file = "{secret}"'))
    assert error(path, environ={}) == (
        f"config.toml: mqtt.password_file: {secret}: cannot read: Permission denied"
    )


def test_password_file_that_is_a_directory(tmp_path: Path) -> None:
    """An unreadable secret as a root test run meets it too (root reads any file mode)."""
    secret = tmp_path / "secret.d"
    secret.mkdir()
    path = write(tmp_path, mqtt_login(f'password_file = "{secret}"'))
    assert error(path, environ={}) == (
        f"config.toml: mqtt.password_file: {secret}: cannot read: Is a directory"
    )


def test_config_error_is_a_usage_error() -> None:
    """The CLI prints UsageError as one line with exit status 2."""
    assert issubclass(ConfigError, UsageError)


# -- fuzzing: only ConfigError ever escapes -------------------------------------------------

KEYS = [
    f"{section}.{key}"
    for section, table in tomllib.loads(DEFAULT_TOML).items()
    for key in table  # type: ignore[union-attr]
] + ["mqtt.port", "mqtt.password"]
SECTION_NAMES = sorted({key.split(".")[0] for key in KEYS})
FIELD_NAMES = sorted({key.split(".")[1] for key in KEYS})
# Characters that matter to TOML and to the checks, plus a few awkward ones. Documents are
# assembled from ready-made pieces: drawing them is far cheaper than composing values.
CHARS = "abcehlmnoprstuwy_-.019 \t\n\r\"'[]{}=,#\\+:/é한\x00\x7f\u2028"
LITERALS = [
    *("true", "false", "0", "1", "-1", "2", "3", "1883", "65536", "8000", "16000", "0.5"),
    *("1.5", "-0.0", "nan", "inf", "-inf", "1e400", "9" * 40, "1979-05-27", "07:32:00"),
    *('""', '" "', '"auto"', '"wav"', '"stdin"', '"debug"', '"X"', '"ca.pem"', '"/"', '"."'),
    *('"/dev/null"', '"/etc/passwd"', '"/proc/self/environ"', f'"{"x" * 300}"', '"a\\u0000b"'),
    *(f'"{EN_MODEL}"', "[]", "[1, 2]", '["a", 1]', "{}", "{a = 1}", "{port = 1}"),
]
small_text = st.text(st.sampled_from(CHARS), max_size=20)
toml_lines = st.one_of(
    st.sampled_from([f"[{name}]" for name in SECTION_NAMES]),
    st.sampled_from(["", "[mqt]", "[mqtt.tls]", "[[mqtt]]", "[model]\n[model]", "a.b.c = 1"]),
    st.builds(
        "{} = {}".format,
        st.one_of(st.sampled_from(FIELD_NAMES), small_text.map(json.dumps)),
        st.one_of(st.sampled_from(LITERALS), small_text.map(json.dumps)),
    ),
    small_text,
)
documents = st.lists(toml_lines, max_size=10).map("\n".join)
override_values = st.one_of(
    st.sampled_from([None, True, 0, -1, 1.5, math.nan, 10**40, "", "1883", "true", "x", [1], {}]),
    st.sampled_from([EN_MODEL, Path("/nonexistent"), str(EN_MODEL), object()]),
    small_text,
)
overrides = st.lists(
    st.tuples(st.one_of(st.sampled_from(KEYS), small_text, st.integers()), override_values),
    max_size=4,
).map(dict)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    """A folder for the fuzzed files, in memory where possible: thousands are written."""
    memory = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=memory if memory.is_dir() else None) as folder:
        yield Path(folder)


def check_only_config_errors(path: Path | None, **kwargs: object) -> None:
    try:
        config = load_config(path, **kwargs)  # type: ignore[arg-type]
    except ConfigError as err:
        assert len(str(err).splitlines()) == 1, str(err)
        event("ConfigError: " + ("invalid TOML" if "invalid TOML" in str(err) else "other"))
    else:
        assert isinstance(config, Config)
        event("loaded")


@settings(
    max_examples=2000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    database=None,
)
@given(
    text=st.one_of(documents, st.text(max_size=40)),
    changes=st.one_of(st.just({}), overrides),
    model=st.sampled_from(["file", "override", ""]),
    mode=st.sampled_from([0o600, 0o644]),
)
def test_fuzz_raises_only_config_error(
    scratch: Path, text: str, changes: dict[object, object], model: str, mode: int
) -> None:
    """Random text, TOML-ish documents and overrides: a Config or a one-line ConfigError."""
    if model == "file":
        text = f"{text}\n{model_line()}"
    elif model == "override":
        changes = {"model.path": EN_MODEL, **changes}
    path = write(scratch, text, mode=mode)
    check_only_config_errors(path, overrides=changes, environ={"X": SECRET})
    check_only_config_errors(None, overrides=changes, environ={"X": SECRET})


def test_readme_documents_every_key_with_its_default() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    assert f"```toml\n{DEFAULT_TOML}```" in readme


def test_outbox_and_decoder_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'{model_line()}[outbox]\npath = "spool/outbox.sqlite"\nexpire_after = 0\n'
        "max_messages = 50\n[vosk]\ntrailing_silence = 0.25\nbeam = 8\n",
    )
    config = load_config(path, environ={})
    assert config.outbox.path == tmp_path / "spool" / "outbox.sqlite"
    assert config.outbox.expire_after is None  # 0: never expire (max_age still applies)
    assert (config.outbox.max_messages, config.outbox.max_age) == (50, 86400.0)
    decoder = config.vosk.decoder
    assert (decoder.trailing_silence, decoder.beam, decoder.max_active) == (0.25, 8.0, None)
    assert decoder.frames_per_chunk is None  # 0, the default: the model's own
    chunked = write(tmp_path, f"{model_line()}[vosk]\nframes_per_chunk = 150\n", name="c.toml")
    assert load_config(chunked, environ={}).vosk.decoder.frames_per_chunk == 150
    assert load_config(chunked, environ={}).vosk.decoder.arguments() == {
        "--frames-per-chunk": "150"
    }
    late = write(tmp_path, f"{model_line()}[outbox]\nmax_age = 30\n", name="late.toml")
    assert error(late, environ={}) == (
        f"{late}: outbox.expire_after: must not exceed outbox.max_age (60 > 30)"
    )
    negative = write(tmp_path, f"{model_line()}[vosk]\ntrailing_silence = -1\n", name="neg.toml")
    assert error(negative, environ={}).startswith(f"{negative}: vosk.trailing_silence: ")


def test_a_bad_frames_per_chunk_stops_voice_agent_run(tmp_path: Path) -> None:
    """Through the command line as a user meets it: one line naming the key, status 2."""
    path = write(tmp_path, f"{model_line()}[vosk]\nframes_per_chunk = -20\n")
    done = voice_agent("run", "--config", str(tmp_path / path))
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"voice-agent: error: {tmp_path / path}: vosk.frames_per_chunk: expected 0 (the"
        " model's own) or 10 ms frames from 1 to 1000, got -20\n"
    )
    assert done.stdout == ""


def test_run_sets_any_key_with_set_and_its_named_options_win(tmp_path: Path) -> None:
    path = write(tmp_path, f'{model_line()}[mqtt]\nhost = "file.lan"\n')
    args = build_parser().parse_args(
        [
            *("run", "--config", str(path), "--host", "flag.lan"),
            *("--set", "vosk.frames_per_chunk=50", "--set", "mqtt.host=set.lan"),
            *("--set", "wake.window = 2.5", "--set", "mqtt.client_id=a=b"),
        ]
    )
    config = load_config(path, run_overrides(args), environ={})
    assert config.vosk.decoder.frames_per_chunk == 50
    assert (config.mqtt.host, config.wake.window) == ("flag.lan", 2.5)
    assert config.mqtt.client_id == "a=b"  # only the first '=' separates


@pytest.mark.parametrize(
    ("setting", "last_line"),
    [
        (
            "vosk.bem=8",
            "voice-agent: error: command line: unknown key 'vosk.bem' (did you mean 'vosk.beam'?)",
        ),
        (
            "vosk.beam=wide",
            "voice-agent: error: command line: vosk.beam: expected a number from 0 to 100, got"
            ' "wide"',
        ),
        (
            "beam",
            "voice-agent run: error: argument --set: expected KEY=VALUE such as vosk.beam=8,"
            " got 'beam'",
        ),
    ],
)
def test_a_bad_set_is_one_line_and_exit_2(tmp_path: Path, setting: str, last_line: str) -> None:
    path = tmp_path / write(tmp_path, model_line())  # absolute: the child runs elsewhere
    done = voice_agent("run", "--config", str(path), "--set", setting)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1] == last_line
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_wake_keys(tmp_path: Path) -> None:
    (tmp_path / "wake").mkdir()
    config = load_config(
        write(
            tmp_path,
            '[wake]\nengine = "micro"\nmodels = ["alexa", "wake/hey_pi.json", "/abs/x.json"]\n'
            "cutoff = 0.7\nrefractory = 0\npreroll = 0\nend_silence = 0.5\n"
            "command_timeout = 12\n",
        ),
        {"model.path": EN_MODEL},
        environ={},
    )
    wake = config.wake
    # A manifest path is relative to the configuration file, like every other path.
    assert wake.models == ("alexa", str(tmp_path / "wake/hey_pi.json"), "/abs/x.json")
    assert (wake.cutoff, wake.refractory, wake.preroll) == (0.7, 0.0, 0.0)
    assert (wake.end_silence, wake.command_timeout, wake.enabled) == (0.5, 12.0, True)
    none = load_config(None, {"model.path": EN_MODEL, "wake.engine": "none"}, environ={})
    assert (none.wake.engine, none.wake.enabled) == ("none", False)
    flags = load_config(
        None, {"model.path": EN_MODEL, "wake.models": "okay_nabu, hey_mycroft"}, environ={}
    )
    assert flags.wake.models == ("okay_nabu", "hey_mycroft")
    phrase = load_config(
        None, {"model.path": EN_MODEL, "wake.engine": "phrase", "wake.phrase": "hey pi"}, environ={}
    )
    assert (phrase.wake.engine, phrase.wake.enabled) == ("phrase", True)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[wake]\nengine = "porcupine"\n',
            'config.toml: wake.engine: expected "micro", "phrase" or "none", got "porcupine"',
        ),
        (
            "[wake]\nmodels = []\n",
            "config.toml: wake.models: expected an array of model names or .json paths,"
            ' e.g. ["okay_nabu"], got an array',
        ),
        (
            '[wake]\nmodels = "okay_nabu"\n',
            "config.toml: wake.models: expected an array of model names or .json paths,"
            ' e.g. ["okay_nabu"], got "okay_nabu"',
        ),
        (
            '[wake]\nmodels = ["okay_nabu", ""]\n',
            "config.toml: wake.models: expected an array of model names or .json paths,"
            ' e.g. ["okay_nabu"], got an array',
        ),
        (
            "[wake]\ncutoff = 1.5\n",
            "config.toml: wake.cutoff: expected a number from 0 to 1, got 1.5",
        ),
        (
            "[wake]\nrefractory = -1\n",
            "config.toml: wake.refractory: expected a number from 0 to 60, got -1",
        ),
        (
            "[wake]\npreroll = 2\n",
            "config.toml: wake.preroll: expected a number from 0 to 1, got 2",
        ),
        (
            "[wake]\nend_silence = 0\n",
            "config.toml: wake.end_silence: expected a number from 0.1 to 5, got 0",
        ),
        (
            '[wake]\ncommand_timeout = "8"\n',
            'config.toml: wake.command_timeout: expected a number from 1 to 60, got "8"',
        ),
        (
            '[wake]\nengine = "phrase"\n',
            'config.toml: wake.phrase: required when wake.engine = "phrase"',
        ),
        (
            '[wake]\nphrase = "hey pi"\n',
            'config.toml: wake.phrase: only used with wake.engine = "phrase"',
        ),
    ],
)
def test_bad_wake_keys_are_one_line(tmp_path: Path, text: str, message: str) -> None:
    assert error(write(tmp_path, text), overrides={"model.path": EN_MODEL}, environ={}) == message
