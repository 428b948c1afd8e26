"""``voice-agent doctor``: check an installation, one line per check, with a hint for each failure.

Every check runs what the daemon would run, with the configuration it would use: the
TFLite runtime, both models, the microphone (a short level meter), the broker with the
configured TLS and login, the permissions of the configuration and state directory, and
the systemd unit. Exit status 0 only when every check passes.

    ✓ vosk model: /var/lib/voice-agent/vosk/vosk-model-small-en-us-0.15 (16000 Hz, loaded in 1.1 s)
    ✗ broker: localhost:1883: connection refused — is mosquitto running? check mqtt.host ...
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np

from agent.config import Config, ConfigError, find_config, load_config

__all__ = ["Check", "run_doctor"]

OK: Final = "✓"
FAIL: Final = "✗"
PACKAGES: Final = ("voice-agent", "numpy", "vosk", "paho-mqtt", "sounddevice")
RUNTIME_PACKAGES: Final = {
    "tflite_runtime": "tflite-runtime",
    "ai_edge_litert": "ai-edge-litert",
    "tensorflow": "tensorflow",
}
SILENT_DBFS: Final = -80.0
"""A peak under this over the whole meter is digital silence: a muted or dead input."""
UNIT: Final = "voice-agent"


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    name: str
    ok: bool
    detail: str
    hint: str = ""

    def line(self) -> str:
        """``✓ name: detail`` or ``✗ name: detail — hint``."""
        text = f"{OK if self.ok else FAIL} {self.name}: {self.detail}"
        return f"{text} — {self.hint}" if not self.ok and self.hint else text


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


# -- the checks ---------------------------------------------------------------------------


def check_python() -> Check:
    # Informational: an older Python could not have imported this module (tomllib).
    return Check("python", True, f"{platform.python_version()} ({sys.executable})")


def check_packages() -> Check:
    found, missing = [], []
    for name in PACKAGES:
        try:
            found.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            missing.append(name)
    if missing:
        return Check(
            "packages",
            False,
            f"missing {', '.join(missing)}",
            "pip install 'voice-agent[runtime]'",
        )
    return Check("packages", True, ", ".join(found))


def check_config(path: Path | None, environ: Mapping[str, str]) -> tuple[Check, Config | None]:
    try:
        config = load_config(path, environ=environ)
    except ConfigError as err:
        hint = (
            "set model.path to a directory made by 'voice-agent convert'"
            if ": model.path: " in str(err)
            else "see 'Configuration' in the README"
        )
        return Check("config", False, str(err), hint), None
    return Check(
        "config", True, str(path) if path is not None else "none found, built-in defaults"
    ), config


def check_runtime(config: Config) -> Check:
    from agent.tflite import RuntimeUnavailable, available_runtime

    try:
        runtime = available_runtime(config.model.runtime)
    except RuntimeUnavailable as err:
        return Check(
            "tflite runtime", False, str(err).split(";")[0], "pip install 'voice-agent[runtime]'"
        )
    try:
        number = version(RUNTIME_PACKAGES[runtime])
    except PackageNotFoundError:
        number = "(version unknown)"
    return Check(
        "tflite runtime", True, f"{runtime} {number} (model.runtime = {config.model.runtime})"
    )


def check_intent_model(config: Config) -> Check:
    from agent.classifier import IntentClassifier
    from agent.metadata import ModelError
    from agent.tflite import RuntimeUnavailable

    try:
        classifier = IntentClassifier.load(
            config.model.path, config.model.runtime, config.model.threads, config.model.fill
        )
        classifier.classify("hello")
    except (ModelError, RuntimeUnavailable, ValueError, RuntimeError) as err:
        text = _one_line(err)
        # Most model errors already say how to fix them.
        if "voice-agent" in text or "pip install" in text:
            text, _, hint = text.rpartition("; ")
        elif ": model.room" in text:
            hint = 'set model.room to a value of the model\'s room slot, or to ""'
        else:
            hint = "rebuild it with 'voice-agent convert' or copy a complete model directory"
        return Check("intent model", False, text, hint)
    info = classifier.info
    intents = len(info.labels) - (1 if "<none>" in info.labels else 0)
    return Check(
        "intent model",
        True,
        f"{info.name} version {info.version} ({info.language}, {intents} intents,"
        f" threshold {info.threshold:.2f}) in {info.directory}",
    )


def _sample_rate(model_dir: Path) -> int:
    """The rate the acoustic model was trained at: ``--sample-frequency`` of its mfcc.conf,
    else Kaldi's default of 16 kHz."""
    for conf in (model_dir / "conf" / "mfcc.conf", model_dir / "mfcc.conf"):
        if conf.is_file():
            found = re.search(r"--sample-frequency=(\d+)", conf.read_text(encoding="utf-8"))
            return int(found[1]) if found else 16000
    return 16000


def check_vosk_model(config: Config) -> tuple[Check, Any]:
    from agent.recognizer import RecognizerError, check_model_dir

    folder = config.vosk.model
    hint = (
        "voice-agent models fetch vosk-model-small-en-us-0.15 (or set vosk.model to the"
        " model's folder)"
    )
    try:
        check_model_dir(folder)
        import vosk

        vosk.SetLogLevel(-1)
        started = time.perf_counter()
        model = vosk.Model(str(folder))
        seconds = time.perf_counter() - started
    except RecognizerError as err:
        return Check("vosk model", False, _one_line(err), hint), None
    except ImportError as err:
        return Check("vosk model", False, _one_line(err), "pip install vosk"), None
    except Exception as err:  # Vosk raises a bare Exception when Kaldi fails to load
        return Check("vosk model", False, f"{folder}: cannot load: {_one_line(err)}", hint), None
    return (
        Check(
            "vosk model",
            True,
            f"{folder} ({_sample_rate(folder)} Hz, loaded in {seconds:.1f} s)",
        ),
        model,
    )


def check_grammar(config: Config, model: Any) -> Check:
    from agent.recognizer import RecognizerError, load_grammar

    if not config.vosk.grammar:
        return Check("grammar", True, "off (vosk.grammar = false: open vocabulary)")
    try:
        grammar = load_grammar(config.model.path)
    except RecognizerError as err:
        return Check(
            "grammar", False, _one_line(err), "rebuild the model with 'voice-agent convert'"
        )
    if model is None:
        return Check(
            "grammar", False, f"{len(grammar)} entries, not checked", "fix the Vosk model first"
        )
    unknown = sorted(
        {w for entry in grammar for w in entry.split() if model.vosk_model_find_word(w) < 0}
    )
    lost = [entry for entry in grammar if any(w in unknown for w in entry.split())]
    if len(lost) * 2 > len(grammar):
        return Check(
            "grammar",
            False,
            f"{len(lost)} of {len(grammar)} entries have words the Vosk model does not know"
            f" ({', '.join(unknown[:5])}{', ...' if len(unknown) > 5 else ''})",
            "the intent model's language must be the Vosk model's",
        )
    if unknown:
        return Check(
            "grammar",
            True,
            f"{len(grammar) - len(lost)} of {len(grammar)} entries can be heard; Vosk does not"
            f" know {', '.join(unknown)}, so the {len(lost)} with them cannot",
        )
    return Check("grammar", True, f"{len(grammar)} entries, every word known to the Vosk model")


_DECODER_OPTIONS: tuple[tuple[str, str], ...] = (
    ("--beam", "beam"),
    ("--max-active", "max-active"),
    ("--lattice-beam", "lattice-beam"),
    ("--endpoint.rule2.min-trailing-silence", "endpoint pauses"),
    ("--frames-per-chunk", "frames per chunk"),
)
"""The ``model.conf`` options shown, by the names of this report (the pauses of endpoint
rules 3 and 4 follow rule 2's)."""


def check_decoder(config: Config) -> Check:
    """The Kaldi settings recognition runs with: the model's ``conf/model.conf`` with the
    config's overrides on top, which is what users on a Pi 3 or 4 tune for speed."""
    from agent.recognizer import KALDI_FRAMES_PER_CHUNK

    conf = config.vosk.model / "conf" / "model.conf"
    try:
        lines = conf.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []  # the older flat layout: Kaldi's defaults, and no overrides possible
    except (OSError, UnicodeDecodeError) as err:
        return Check("decoder", False, f"{conf}: cannot read: {_one_line(err)}")
    options = dict(
        line.strip().split("=", 1)
        for line in lines
        if line.strip().startswith("--") and "=" in line
    )
    overrides = config.vosk.decoder.arguments()
    options.update(overrides)

    def shown(name: str) -> str:
        value = options.get(name)
        if value is None:
            return str(KALDI_FRAMES_PER_CHUNK) if name == "--frames-per-chunk" else "?"
        try:
            return f"{float(value):g}"
        except ValueError:
            return value

    pauses = " / ".join(shown(f"--endpoint.rule{n}.min-trailing-silence") for n in (2, 3, 4))
    parts = [
        f"{label} {pauses} s" if label == "endpoint pauses" else f"{label} {shown(name)}"
        for name, label in _DECODER_OPTIONS
    ]
    changed = [label for name, label in _DECODER_OPTIONS if name in overrides]
    source = "the model's conf/model.conf, Kaldi's defaults where it is silent"
    origin = f"set in the config: {', '.join(changed)}; the rest: {source}" if changed else source
    return Check(
        "decoder",
        True,
        f"{', '.join(parts)} ({origin}); sentence pause {config.vosk.sentence_pause:g} s",
    )


def check_wake(config: Config) -> Check:
    """What must come before a command, with the wake word models loaded as the service
    loads them (a bad custom model fails here, with the line the service would print)."""
    from agent.wakeword import WakeWordDetector, WakeWordError

    wake = config.wake
    if wake.engine == "none":
        return Check("wake word", True, "none (wake.engine = none: every utterance is a command)")
    if wake.engine == "phrase":
        return Check(
            "wake word", True, f'phrase "{wake.phrase}" spotted by Vosk (wake.engine = phrase)'
        )
    try:
        detector = WakeWordDetector(wake.models, wake.cutoff, wake.refractory)
    except WakeWordError as err:
        hint = (
            "fix or remove it in wake.models (bundled: okay_nabu, hey_jarvis, hey_mycroft, alexa)"
        )
        return Check("wake word", False, _one_line(err), hint)
    loaded = ", ".join(
        f'{m.id} ("{m.wake_word}", cutoff {detector.cutoff(m.id):g})' for m in detector.models
    )
    return Check("wake word", True, f"{loaded} (wake.engine = micro)")


def _peak(config: Config, seconds: float) -> float | None:
    """The loudest sample in ``seconds`` of the configured input; None when the device
    delivered no audio at all in twice that time (and at least 3 s)."""
    from agent.audio import AudioChunk, microphone_source

    source = microphone_source(
        config.audio.device, config.audio.rate or None, config.audio.channels or None
    )
    deadline = time.monotonic() + max(3.0, 2 * seconds)
    heard, peak = 0.0, None
    try:
        # The source also yields an end of stream whenever the device is quiet for a while.
        for item in source:
            if isinstance(item, AudioChunk) and item.pcm:
                samples = np.frombuffer(item.pcm, dtype="<i2").astype(np.int32)
                peak = max(peak or 0.0, float(np.abs(samples).max()))
                heard += item.seconds
            if heard >= seconds or time.monotonic() > deadline:
                break
    finally:
        source.close()
    return peak


def check_audio(config: Config, seconds: float) -> Check:
    from agent.audio import AudioError, find_input_device

    audio = config.audio
    if audio.source == "wav":
        return Check("audio input", True, f"WAV files from {audio.wav} (audio.source = wav)")
    if audio.source == "stdin":
        return Check(
            "audio input", True, f"raw PCM on stdin at {audio.rate} Hz (audio.source = stdin)"
        )
    hint = (
        "plug in a microphone, pick one with audio.device ('voice-agent devices' lists them);"
        " the service user needs the audio group"
    )
    try:
        device = find_input_device(audio.device)
        peak = _peak(config, seconds)
    except AudioError as err:
        return Check("audio input", False, _one_line(err).removeprefix("microphone: "), hint)
    name = f"{device.name} (index {device.index})"
    if peak is None:
        return Check("audio input", False, f"{name}: no audio arrived", hint)
    dbfs = 20 * np.log10(max(peak, 1.0) / 32768)
    detail = f"{name}, peak {dbfs:.1f} dBFS over {seconds:g} s"
    if dbfs < SILENT_DBFS:
        return Check(
            "audio input", False, f"{detail}: silent", "is the input muted? (alsamixer, F4)"
        )
    return Check("audio input", True, detail)


@dataclass(frozen=True)
class _Connack:
    ok: bool
    detail: str


def _mqtt_login(config: Config, timeout: float) -> _Connack:
    """One MQTT CONNECT with the configured TLS and login, and the broker's answer."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    from agent.mqtt import _describe_os_error, authenticate

    settings = config.mqtt
    # Its own client id: the daemon's would push the running daemon off the broker.
    v5 = settings.protocol == "5"
    client = paho.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"{settings.client_id}-doctor-{os.getpid()}",
        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
    )
    authenticate(client, settings)
    answer: list[_Connack] = []
    done = threading.Event()

    def on_connect(c: Any, u: Any, flags: Any, reason: Any, properties: Any) -> None:
        answer.append(_Connack(not reason.is_failure, str(reason).lower()))
        done.set()

    def on_disconnect(c: Any, u: Any, flags: Any, reason: Any, properties: Any) -> None:
        done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(settings.host, settings.port, keepalive=max(5, int(timeout) + 1))
    except (OSError, ValueError) as err:
        return _Connack(False, _describe_os_error(err))
    client.loop_start()
    try:
        done.wait(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    if not answer:
        return _Connack(
            False, "no answer to CONNECT (does the port speak MQTT, and TLS if mqtt.tls?)"
        )
    return answer[0]


def check_broker(config: Config, timeout: float) -> list[Check]:
    """Three lines: reachable (TCP), TLS (handshake and certificate), authentication (CONNACK)."""
    settings = config.mqtt
    where = settings.address
    started = time.perf_counter()
    try:
        socket.create_connection((settings.host, settings.port), timeout).close()
    except OSError as err:
        from agent.mqtt import _describe_os_error

        text = (
            _describe_os_error(err)
            if not isinstance(err, socket.gaierror)
            else f"unknown host ({err.strerror})"
        )
        hint = "start the broker, or check mqtt.host and mqtt.port"
        return [
            Check("broker", False, f"{where}: {text}", hint),
            Check("tls", False, "not checked (broker unreachable)", "fix the broker first"),
            Check(
                "authentication", False, "not checked (broker unreachable)", "fix the broker first"
            ),
        ]
    checks = [
        Check("broker", True, f"{where} reachable ({(time.perf_counter() - started) * 1e3:.0f} ms)")
    ]
    if settings.tls:
        tls = _tls_handshake(config, timeout)
        checks.append(tls)
        if not tls.ok:
            checks.append(
                Check("authentication", False, "not checked (TLS failed)", "fix TLS first")
            )
            return checks
    else:
        checks.append(Check("tls", True, "off (mqtt.tls = false)"))
    answer = _mqtt_login(config, timeout)
    who = f"as '{settings.username}'" if settings.username is not None else "anonymously"
    if answer.ok:
        checks.append(Check("authentication", True, f"logged in {who}"))
    else:
        checks.append(
            Check(
                "authentication",
                False,
                f"{where}: {answer.detail} (logging in {who})",
                "check mqtt.username and the password (mqtt.password_file / password_env)",
            )
        )
    return checks


def _tls_handshake(config: Config, timeout: float) -> Check:
    settings = config.mqtt
    from agent.mqtt import _describe_os_error

    try:
        context = ssl.create_default_context(cafile=settings.ca_file)
        if settings.cert_file:
            context.load_cert_chain(settings.cert_file, settings.key_file)
        with (
            socket.create_connection((settings.host, settings.port), timeout) as raw,
            context.wrap_socket(raw, server_hostname=settings.host) as tls,
        ):
            protocol = tls.version()
            subject = dict(item[0] for item in tls.getpeercert().get("subject", ()))  # type: ignore[union-attr, misc]
    except (OSError, ValueError) as err:
        hint = (
            "check mqtt.ca_file (the CA that signed the broker's certificate) and that the"
            " certificate names mqtt.host"
            if isinstance(err, ssl.SSLCertVerificationError)
            else "does this port speak TLS? (mosquitto: a listener with certfile/keyfile)"
        )
        return Check("tls", False, _describe_os_error(err), hint)
    return Check(
        "tls",
        True,
        f"{protocol}, certificate of {subject.get('commonName', '?')} verified for {settings.host}",
    )


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_config_permissions(config: Config, path: Path | None) -> Check:
    """The configuration file is not world-writable, and the file holding the MQTT password
    is not world-readable (a literal ``mqtt.password`` in a world-readable file is already
    refused by the configuration itself)."""
    name = "config permissions"
    if path is None:
        return Check(name, True, "no configuration file (built-in defaults)")
    mode = _mode(path)
    if mode & 0o002:
        return Check(
            name, False, f"{path} is {mode:04o}: anyone can change it", f"chmod o-w {path}"
        )
    secret = _password_file(path) if config.mqtt.password is not None else None
    if secret is not None and _mode(secret) & 0o004:
        return Check(
            name,
            False,
            f"{secret} holds the MQTT password and is world-readable ({_mode(secret):04o})",
            f"chmod 600 {secret}",
        )
    extra = f", {secret.name} not world-readable" if secret is not None else ""
    return Check(name, True, f"{path} {mode:04o} {_owner(path)}{extra}")


def _password_file(path: Path) -> Path | None:
    # The configuration resolves mqtt.password_file to the secret itself and keeps no path;
    # the doctor, whose job is the files, reads which file it was.
    import tomllib

    try:
        mqtt = tomllib.loads(path.read_text(encoding="utf-8")).get("mqtt", {})
    except (OSError, ValueError):
        return None
    name = mqtt.get("password_file") if isinstance(mqtt, dict) else None
    if not isinstance(name, str) or not name:
        return None
    return path.absolute().parent / name


def _owner(path: Path) -> str:
    import grp
    import pwd

    info = path.stat()
    try:
        user = pwd.getpwuid(info.st_uid).pw_name
    except KeyError:
        user = str(info.st_uid)
    try:
        group = grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        group = str(info.st_gid)
    return f"{user}:{group}"


def _free_space(folder: Path, floor: int) -> tuple[str, str]:
    """ ", N MiB free" for the check's line, and the problem ("" when none): below ``floor``
    the daemon stores no new utterance (see ``OutboxSettings.min_free``)."""
    info = os.statvfs(folder)
    free = info.f_bavail * info.f_frsize
    text = f", {free / 2**20:.1f} MiB free"
    if free < floor:
        return text, (
            f"only {free // 1024} KiB free, below the {floor // 1024} KiB the outbox keeps"
            " free: new commands are refused"
        )
    return text, ""


def check_state_directory(config: Config) -> Check:
    name = "state directory"
    folder = config.outbox.path.parent
    floor = config.outbox.min_free
    if folder.is_dir():
        if os.access(folder, os.W_OK | os.X_OK):
            free, low = _free_space(folder, floor)
            detail = f"{folder} writable ({_mode(folder):04o} {_owner(folder)}){free}"
            if low:
                return Check(name, False, f"{detail}: {low}", f"free some space on {folder}")
            return Check(name, True, detail)
        return Check(
            name,
            False,
            f"{folder} is not writable by this user ({_mode(folder):04o} {_owner(folder)})",
            f"run as the service user (sudo -u {UNIT} voice-agent doctor) or chown it",
        )
    ancestor = next(p for p in folder.parents if p.exists())
    if os.access(ancestor, os.W_OK | os.X_OK):
        free, low = _free_space(ancestor, floor)
        detail = f"{folder} will be created (in {ancestor}, writable{free})"
        if low:
            return Check(name, False, f"{detail}: {low}", f"free some space on {ancestor}")
        return Check(name, True, detail)
    return Check(
        name,
        False,
        f"{folder} does not exist and {ancestor} is not writable",
        f"sudo install -d -o {UNIT} {folder} (systemd/install.sh does this)",
    )


def check_systemd(run: Callable[..., subprocess.CompletedProcess[str]] = subprocess.run) -> Check:
    name = "systemd"
    if shutil.which("systemctl") is None:
        return Check(name, True, "no systemctl here (not checked)")
    result = run(
        ["systemctl", "show", UNIT, "--property=LoadState,ActiveState,SubState"],
        capture_output=True,
        text=True,
        timeout=10,
    )
    if result.returncode != 0:
        return Check(name, True, "systemd is not running here (not checked)")
    state = dict(line.split("=", 1) for line in result.stdout.splitlines() if "=" in line)
    if state.get("LoadState") == "not-found":
        return Check(name, True, f"{UNIT}.service not installed (not checked)")
    active = state.get("ActiveState", "?")
    detail = f"{UNIT}.service {active} ({state.get('SubState', '?')})"
    if active == "active":
        return Check(name, True, detail)
    return Check(name, False, detail, f"journalctl -u {UNIT} -e; sudo systemctl restart {UNIT}")


# -- the report ---------------------------------------------------------------------------


def _guarded(name: str, check: Callable[..., Any], *args: Any) -> Any:
    """``check(*args)``, or a failed :class:`Check` when it raises: a doctor that crashes on
    the broken thing it should describe is no use."""
    try:
        return check(*args)
    except Exception as err:
        return Check(
            name, False, f"{type(err).__name__}: {_one_line(err)}", "a bug: please report it"
        )


def checks(
    path: Path | None, environ: Mapping[str, str], meter_seconds: float = 2.0, timeout: float = 3.0
) -> Iterator[Check]:
    """Every check in order; those that need the configuration stop when it fails."""
    yield check_python()
    yield _guarded("packages", check_packages)
    config_check, config = check_config(path, environ)
    yield config_check
    if config is None:
        return
    yield _guarded("tflite runtime", check_runtime, config)
    yield _guarded("intent model", check_intent_model, config)
    vosk = _guarded("vosk model", check_vosk_model, config)
    vosk_check, vosk_model = vosk if isinstance(vosk, tuple) else (vosk, None)
    yield vosk_check
    yield _guarded("grammar", check_grammar, config, vosk_model)
    if vosk_model is not None:
        yield _guarded("decoder", check_decoder, config)
    del vosk, vosk_model  # a few hundred MB: not kept while the meter runs
    yield _guarded("wake word", check_wake, config)
    yield _guarded("audio input", check_audio, config, meter_seconds)
    broker = _guarded("broker", check_broker, config, timeout)
    yield from broker if isinstance(broker, list) else (broker,)
    yield _guarded("config permissions", check_config_permissions, config, path)
    yield _guarded("state directory", check_state_directory, config)
    yield _guarded("systemd", check_systemd)


def run_doctor(
    config: Path | None,
    environ: Mapping[str, str],
    out: TextIO,
    meter_seconds: float = 2.0,
    timeout: float = 3.0,
) -> int:
    """Print one line per check as it completes; 0 when all passed, else 1."""
    failed = 0
    for check in checks(find_config(config), environ, meter_seconds, timeout):
        print(check.line(), file=out, flush=True)
        failed += not check.ok
    print(
        "all checks passed" if not failed else f"{failed} check{'s' * (failed > 1)} failed",
        file=out,
    )
    return 0 if not failed else 1
