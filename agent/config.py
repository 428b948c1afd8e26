"""The daemon's configuration: one TOML file plus command-line overrides, checked once at start.

:func:`load_config` reads the file, applies the overrides, checks every value and returns a
frozen :class:`Config` with the MQTT settings ready-made (password resolved). Nothing else
in the agent reads configuration files or environment variables. Every problem is a
:class:`ConfigError` whose ``str()`` is one line naming the file and the key.
"""

from __future__ import annotations

import difflib
import json
import logging
import math
import os
import re
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import Path
from types import MappingProxyType
from typing import Final

from agent.decision import DecisionSettings
from agent.errors import UsageError
from agent.feedback import FeedbackError, read_sound
from agent.files import FileProblem, read_regular
from agent.metadata import METADATA_FILE
from agent.mqtt import PROTOCOLS, MqttSettings
from agent.outbox import OutboxSettings
from agent.recognizer import DecoderOptions
from agent.tflite import RUNTIMES
from agent.topics import MAX_TOPIC_BYTES, level_problem, text_problem, topic_problem

__all__ = [
    "DEFAULT_TOML",
    "SEARCH_PATHS",
    "AudioConfig",
    "Config",
    "ConfigError",
    "FeedbackConfig",
    "HomeAssistantConfig",
    "LogConfig",
    "ModelConfig",
    "QueryConfig",
    "StatusConfig",
    "VoskConfig",
    "WakeConfig",
    "config_paths",
    "find_config",
    "load_config",
]

SEARCH_PATHS: Final = (Path("/etc/voice-agent/config.toml"),)
"""Where the daemon looks for its configuration when no ``--config`` is given."""
DEFAULTS_NAME: Final = "defaults"
"""What errors name as the file when no configuration file is used."""
OVERRIDES_NAME: Final = "command line"
"""What errors name as the file for a value that came from the overrides."""
AUDIO_SOURCES: Final = ("microphone", "wav", "stdin")
WAKE_ENGINES: Final = ("micro", "phrase", "none")
BUNDLED_WAKE_WORDS: Final = ("okay_nabu", "hey_jarvis", "hey_mycroft", "alexa")
"""pymicro-wakeword's models (agent.wakeword.BUNDLED, not imported: that loads TFLite)."""
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
TLS_PORT: Final = 8883

DEFAULT_TOML: Final = """\
# voice-agent configuration (/etc/voice-agent/config.toml).
# Every key is optional: the values below are the defaults. Relative paths are resolved
# against the folder of this file.

[model]
# The intent model directory made by 'voice-agent convert' (holds model.json).
path = "/var/lib/voice-agent/models/smart-home-en"
# TFLite runtime: "auto" (the first that imports), "tflite_runtime", "ai_edge_litert"
# or "tensorflow".
runtime = "auto"
# Interpreter threads (1 or more).
threads = 1
# This Pi's room: a value (or synonym) of the model's room slot, e.g. "kitchen". A command
# that names no room ("lights on") acts on this one, as Home Assistant does with a
# satellite's area; "" leaves such commands rejected (missing_slot:room).
room = ""
# Which slot of the model holds rooms.
room_slot = "room"

[vosk]
# The Vosk speech model directory.
model = "/var/lib/voice-agent/vosk/vosk-model-small-en-us-0.15"
# Constrain recognition to the intent model's sentences or words (its grammar.json).
grammar = true
# Drop an utterance when more than this share of its words (0 to 1) is off-grammar.
max_unk_ratio = 0.5
# With no wake word, the grammar turns a conversation or the TV into strings of command
# words. Accept spoken words only when they are one sentence of the model's grammar, or
# differ from one by at most this many words; -1 accepts any words (the classifier alone
# decides). Needs a grammar of whole sentences (a spec of up to 2000 sentences).
sentence_slack = 0
# Drop an utterance when any of its words was heard with less confidence than this
# (0 to 1; 0 turns it off).
min_word_confidence = 0.0
# Decoder settings; 0 keeps the model's own (its conf/model.conf). Smaller beams decode
# faster and less accurately: on a Pi 3 try beam = 8, max_active = 1500, lattice_beam = 4.
beam = 0.0
max_active = 0
lattice_beam = 0.0
# Seconds of silence that end an utterance; 0 keeps the model's own rules (0.5 s after a
# sentence the decoder finds complete, else 1 or 2 s). Most of the delay between the end
# of speech and the command is this pause: 0.3 answers quickly but cuts a long hesitation.
trailing_silence = 0.0
# 10 ms frames the acoustic network computes at once (1 to 1000); 0 keeps the model's own
# (Kaldi's 20). Bigger chunks cost less CPU per second of audio (150: about a third less in
# grammar mode; for a Pi 3/4), but partial results and the end of an utterance come up to
# one chunk (N x 10 ms) later, and some transcripts change.
frames_per_chunk = 0
# With a grammar of whole sentences (a small spec): end the utterance once Vosk has heard
# one complete sentence and the audio has been quiet for this many seconds, without
# waiting for the pause above; 0 turns it off. A command that is the start of a longer one
# ("lights off" / "lights off in the kitchen") ends early if the speaker hesitates that
# long inside it.
sentence_pause = 0.2

[wake]
# What must come before a command: "micro" (a wake word model, microWakeWord: only the
# speech after it reaches the speech recognizer, and the Pi does almost nothing until it
# is heard), "phrase" (words spotted by Vosk itself, below) or "none" (every utterance is
# a command: for push-to-talk and other setups that decide elsewhere when to listen).
engine = "micro"
# For "micro": the wake words, each a bundled model ("okay_nabu", "hey_jarvis",
# "hey_mycroft", "alexa") or the path of a microWakeWord model's .json manifest (with
# its .tflite beside it), e.g. ["okay_nabu", "wake/hey_pi.json"].
models = ["okay_nabu"]
# Probability (0 to 1) above which a model fires; 0 keeps each model's own cutoff (from
# its manifest). Higher: fewer false wakes, more missed ones.
cutoff = 0.0
# Seconds (0 to 60) after a wake word during which no other is taken.
refractory = 2.0
# Seconds (0 to 1) before the wake word's detection that may hold the command's start:
# the models fire 0.1 to 0.2 s after the word, so a command said in the same breath has
# begun by then. The command's audio starts at the quietest 10 ms of it.
preroll = 0.3
# Seconds (0.1 to 5) of no speech, once speech was heard after the wake word, that end
# the command when the speech recognizer has not found its end first. The voice activity
# detector itself reports "no speech" about 0.6 s after the last word, so 0.3 ends a
# command about 0.9 s after it, and a pause between two words does not.
end_silence = 0.3
# Seconds (1 to 60) from the wake word after which the command ends anyway.
command_timeout = 8.0
# For "phrase": words that must start a command, e.g. "hey pi".
phrase = ""
# For "phrase": seconds after the wake phrase during which a command is accepted (more
# than 0).
window = 5.0

[audio]
# Where speech comes from: "microphone", "wav" or "stdin" (raw 16-bit PCM).
source = "microphone"
# Input device: a name (or part of one), an index such as 2, or "" for the default device.
device = ""
# Sample rate in Hz (8000 to 192000); 0 uses the device's own rate. Required for "stdin".
rate = 0
# 1 or 2 channels; 0 uses the device's own (mono for "stdin").
channels = 0
# For source = "wav": a .wav file or a folder of them.
wav = ""
# Seconds (1 to 300) without audio after which the microphone counts as gone: it is closed
# and found again by name (a USB microphone plugged back in works without a restart).
# Also how long the audio loop may make no progress at all (a device or recognizer stuck)
# before the agent stops feeding the systemd watchdog, which then restarts it.
stall_timeout = 10.0

[mqtt]
# The broker.
host = "localhost"
# Broker port (1 to 65535); unset: 1883, or 8883 with tls = true.
# port = 1883
# MQTT client id, unique per broker; "" derives "voice-agent-<site_id>-<machine>",
# <machine> being 8 hex digits from /etc/machine-id (or the host name), so that two Pis
# never share one (a broker drops the first when a second logs in with its id).
client_id = ""
# This agent's site id in Hermes messages and topics; "" derives it from the host name
# (letters, digits, '_' and '-'; others become '-'), so each Pi is its own site.
site_id = ""
# User name; "" logs in anonymously.
username = ""
# The password, one of three ways (at most one, and only with a username):
#   password      = the secret itself: discouraged, and refused if this file is
#                   world-readable (chmod 600 it);
#   password_file = a file holding it (trailing newline ignored), e.g. a systemd credential;
#   password_env  = the name of an environment variable holding it.
# password = ""
password_file = ""
password_env = ""
# Connect with TLS (the certificate and host name are always verified).
tls = false
# CA bundle that signed the broker's certificate; "" uses the system's trust store.
ca_file = ""
# Client certificate and its key, for brokers that require one; "" for none.
cert_file = ""
key_file = ""
# Seconds between keepalive pings (1 to 65535).
keepalive = 30
# Retained online/offline topic; "" derives "voice-agent/<site_id>/availability".
availability_topic = ""
# Seconds to wait before reconnecting: doubles from reconnect_min up to reconnect_max.
reconnect_min = 1.0
reconnect_max = 60.0
# MQTT version: "5" (each message carries its outbox id as the user property "id", and a
# publish the broker's ACL denies is reported and kept) or "3.1.1" for older brokers.
protocol = "5"

[outbox]
# Every message is stored here (SQLite) before it is published and removed when the broker
# acknowledges it, so nothing is lost to a broker outage or a restart (the folder is made
# if missing).
path = "/var/lib/voice-agent/outbox.sqlite"
# Bounds: the oldest messages beyond these are dropped (and logged).
max_messages = 1000
max_bytes = 1000000
# Seconds after which anything still queued is dropped.
max_age = 86400.0
# Seconds after which a command is expired rather than sent late ("turn on the light" an
# hour later is wrong); 0 never expires (max_age still applies).
expire_after = 60.0

[query]
# Text commands over MQTT: a Hermes NluQuery ({"input": "turn on the kitchen light"}) on
# this topic is classified and acted on like speech, answered on hermes/intent/<name> or
# hermes/nlu/intentNotRecognized. Off by default: anyone who can publish to the topic can
# then switch your devices, so restrict it with the broker's ACLs.
enabled = false
topic = "hermes/nlu/query"
# Larger payloads are dropped with a warning (64 to 65536 bytes).
max_bytes = 4096

[feedback]
# Short sounds on the wake phrase, on a command and on speech that was not recognized,
# played on the output device without holding up listening.
enabled = false
# WAV files (16-bit PCM); "" plays the sound that ships with voice-agent.
wake = ""
accepted = ""
rejected = ""
# Output device: a name (or part of one), an index such as 2, or "" for the default device.
device = ""

[homeassistant]
# Home Assistant MQTT discovery: the agent shows up as one device (availability, last
# transcript, last intent with its slots as attributes, command counters) with one device
# trigger per intent of the model. Retained configs under the prefix; an intent removed
# from the model loses its trigger on the next start, and turning this off removes the
# device.
discovery = false
# Home Assistant's discovery prefix (its MQTT integration's setting).
prefix = "homeassistant"
# Letters, digits, '_' and '-'; "" derives "voice_agent_<site_id>".
node_id = ""

[status]
# Seconds between health reports (uptime, models, counters, outbox depth, latency
# percentiles), published retained to "voice-agent/<site_id>/status" and written to
# status.json beside the outbox for 'voice-agent status'; 0 turns them off.
interval = 30.0

[log]
# "debug", "info", "warning" or "error".
level = "info"
"""


class ConfigError(UsageError):
    """The configuration is unusable; ``str()`` is one line: ``FILE: KEY: problem``."""


# -- the result ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelConfig:
    """``[model]``: the intent model directory and the TFLite runtime that runs it."""

    path: Path
    runtime: str
    threads: int
    room: str = ""
    """This Pi's room (a value of ``room_slot``), filled into commands that name none."""
    room_slot: str = "room"

    @property
    def fill(self) -> dict[str, str]:
        """Slot values a sentence that names none gets (the classifier's ``fill``)."""
        return {self.room_slot: self.room} if self.room else {}


@dataclass(frozen=True)
class VoskConfig:
    """``[vosk]``: the speech model and how strictly it is held to the intent grammar."""

    model: Path
    grammar: bool
    max_unk_ratio: float
    decoder: DecoderOptions = field(default_factory=DecoderOptions)
    """Beams, endpoint pause and acoustic chunk; a key given as 0 keeps the model's own
    (None here)."""
    sentence_pause: float = 0.2
    sentence_slack: int = 0
    min_word_confidence: float = 0.0

    @property
    def decision(self) -> DecisionSettings:
        """The settings of the decision stage (:mod:`agent.decision`)."""
        return DecisionSettings(self.max_unk_ratio, self.sentence_slack, self.min_word_confidence)


@dataclass(frozen=True)
class WakeConfig:
    """``[wake]``: what must precede a command (a wake word model, a phrase or nothing) and
    how the command after it is cut out of the audio."""

    phrase: str
    window: float
    engine: str = "micro"
    models: tuple[str, ...] = ("okay_nabu",)
    """Bundled model ids, or manifest paths (resolved against the configuration's folder)."""
    cutoff: float | None = None
    """None: each model's own probability cutoff."""
    refractory: float = 2.0
    preroll: float = 0.3
    end_silence: float = 0.3
    command_timeout: float = 8.0

    @property
    def enabled(self) -> bool:
        """True when something must precede a command (a wake word or a phrase)."""
        return self.engine == "micro" or (self.engine == "phrase" and bool(self.phrase))


@dataclass(frozen=True)
class AudioConfig:
    """``[audio]``: where speech comes from; 0 and None mean "the device's own"."""

    source: str
    device: str | int | None
    rate: int
    channels: int
    wav: Path | None
    stall_timeout: float = 10.0
    """Seconds without audio before the microphone is reopened, and without any progress of
    the audio loop before the watchdog is left to restart the agent."""


@dataclass(frozen=True)
class QueryConfig:
    """``[query]``: text commands over MQTT (Hermes ``NluQuery``), off unless enabled."""

    enabled: bool = False
    topic: str = "hermes/nlu/query"
    max_bytes: int = 4096


@dataclass(frozen=True)
class FeedbackConfig:
    """``[feedback]``: short sounds on wake, command and not recognized; None: the shipped one."""

    enabled: bool = False
    wake: Path | None = None
    accepted: Path | None = None
    rejected: Path | None = None
    device: str | int | None = None


@dataclass(frozen=True)
class HomeAssistantConfig:
    """``[homeassistant]``: MQTT discovery for Home Assistant, off unless enabled."""

    discovery: bool = False
    prefix: str = "homeassistant"
    node_id: str = ""
    """Empty: derived from the site id (see ``agent.discovery.node_id_for``)."""


@dataclass(frozen=True)
class StatusConfig:
    """``[status]``: how often the health report is published and written; 0 is off."""

    interval: float = 30.0


@dataclass(frozen=True)
class LogConfig:
    """``[log]``: how much the daemon logs."""

    level: str

    @property
    def level_number(self) -> int:
        """The :mod:`logging` level, e.g. ``logging.INFO``."""
        return int(logging.getLevelName(self.level.upper()))


@dataclass(frozen=True)
class Config:
    """The whole, checked configuration; ``source`` names the file it came from or ``defaults``."""

    source: str
    model: ModelConfig
    vosk: VoskConfig
    wake: WakeConfig
    audio: AudioConfig
    mqtt: MqttSettings
    outbox: OutboxSettings
    log: LogConfig
    query: QueryConfig = field(default_factory=QueryConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    homeassistant: HomeAssistantConfig = field(default_factory=HomeAssistantConfig)
    status: StatusConfig = field(default_factory=StatusConfig)


# -- the schema ---------------------------------------------------------------------------


class _Invalid(Exception):
    """A value failed its check; the message is the part after ``FILE: KEY: ``."""


def _clean(text: str) -> str:
    """``text`` with line breaks and other unprintable characters escaped, so it stays one line."""
    return "".join(c if c.isprintable() else f"\\u{ord(c):04x}" for c in text)


def _show(value: object) -> str:
    """A short TOML-like rendering of a bad value for an error message."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = _clean(json.dumps(value, ensure_ascii=False))
        return text if len(text) <= 60 else text[:56] + '..."'
    if isinstance(value, int):
        return str(value) if abs(value) < 10**30 else "a very large integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return f"a {type(value).__name__}"


def _string(*, empty: bool = True, forbid: str = "", what: str = "") -> Callable[[object], str]:
    """A string (non-empty unless ``empty``) without NUL or any character of ``forbid``."""
    shown = [f"'{c}'" for c in forbid]
    what = what or ("a string" if empty else "a non-empty string") + (
        f" without {', '.join(shown[:-1])} or {shown[-1]}"
        if len(shown) > 1
        else f" without {shown[0]}"
        if shown
        else ""
    )

    def check(value: object) -> str:
        if (
            not isinstance(value, str)
            or (not empty and not value)
            or any(c in value for c in forbid + "\x00")
        ):
            raise _Invalid(f"expected {what}, got {_show(value)}")
        return value

    return check


def _choice(*options: str) -> Callable[[object], str]:
    listed = ", ".join(f'"{o}"' for o in options[:-1]) + f' or "{options[-1]}"'

    def check(value: object) -> str:
        if not isinstance(value, str) or value not in options:
            raise _Invalid(f"expected {listed}, got {_show(value)}")
        return value

    return check


def _integer(low: int, high: int | None = None, what: str = "") -> Callable[[object], int]:
    what = what or (
        f"an integer from {low} to {high}" if high is not None else f"an integer of at least {low}"
    )

    def check(value: object) -> int:
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok or value < low or (high is not None and value > high):  # type: ignore[operator]
            raise _Invalid(f"expected {what}, got {_show(value)}")
        return int(value)  # type: ignore[arg-type]

    return check


def _rate(value: object) -> int:
    ok = isinstance(value, int) and not isinstance(value, bool)
    if not ok or not (value == 0 or 8000 <= value <= 192000):  # type: ignore[operator]
        raise _Invalid(
            f"expected 0 (the device's rate) or a sample rate from 8000 to 192000,"
            f" got {_show(value)}"
        )
    return int(value)  # type: ignore[arg-type]


def _number(low: float, high: float | None = None) -> Callable[[object], float]:
    """A finite int or float; from ``low`` to ``high``, or above ``low`` when ``high`` is None."""
    what = f"a number from {low:g} to {high:g}" if high is not None else f"a number above {low:g}"

    def check(value: object) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        number = float(value) if ok and abs(value) < 1e300 else math.nan  # type: ignore[arg-type]
        inside = low <= number <= high if high is not None else number > low
        if not (math.isfinite(number) and inside):
            raise _Invalid(f"expected {what}, got {_show(value)}")
        return number

    return check


def _names_list(value: object) -> tuple[str, ...]:
    """A non-empty array of non-empty strings (a wake word's models)."""
    items = value if isinstance(value, list) else []
    if not items or not all(isinstance(v, str) and v and v.isprintable() for v in items):
        raise _Invalid(
            f'expected an array of model names or .json paths, e.g. ["okay_nabu"],'
            f" got {_show(value)}"
        )
    return tuple(items)


def _boolean(value: object) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"expected true or false, got {_show(value)}")
    return value


def _device(value: object) -> str | int:
    if isinstance(value, str) and "\x00" not in value:
        return value
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**6:
        return value
    raise _Invalid(
        f"expected a device name or an index (integer of at least 0), got {_show(value)}"
    )


def _host(value: object) -> str:
    ok = isinstance(value, str) and 0 < len(value) <= MAX_HOST_CHARS and value.isprintable()
    if not ok or " " in value:  # type: ignore[operator]
        raise _Invalid(f"expected a host name or address, got {_show(value)}")
    return value  # type: ignore[return-value]


def _env_name(value: object) -> str:
    if not isinstance(value, str) or "=" in value or "\x00" in value:
        raise _Invalid(f"expected the name of an environment variable, got {_show(value)}")
    return value


def _prefix(value: object) -> str:
    """A discovery prefix: topic levels without wildcards or empty levels."""
    if (
        not isinstance(value, str)
        or not re.fullmatch(r"[^/+#\x00]+(/[^/+#\x00]+)*", value)
        or topic_problem(value) is not None
    ):
        raise _Invalid(
            f'expected a topic prefix such as "homeassistant" (no wildcards, no leading,'
            f" trailing or double '/'), got {_show(value)}"
        )
    return value


MAX_SITE_ID_BYTES: Final = 128
"""A site id is a room's name and one level of several topics; 128 bytes is plenty."""
MAX_CLIENT_ID_BYTES: Final = 256
"""MQTT and paho cap a client id at 65,535 bytes (a longer one kills paho's network thread
while the agent looks alive); brokers need accept only 23; 256 holds any derived id."""
MAX_HOST_CHARS: Final = 253
"""The longest DNS name."""


def _topic(*, empty: bool) -> Callable[[object], str]:
    """An MQTT topic under the one rule of :mod:`agent.topics` ("" allowed if ``empty``)."""

    def check(value: object) -> str:
        if isinstance(value, str) and value == "" and empty:
            return value
        problem = topic_problem(value) if isinstance(value, str) else "is not a string"
        if problem is not None:
            raise _Invalid(f"expected an MQTT topic, got {_show(value)}, which {problem}")
        return value  # type: ignore[return-value]

    return check


def _mqtt_text(
    max_bytes: int, *, level: bool = False, empty: bool = True
) -> Callable[[object], str]:
    """A string MQTT can carry: no control characters or lone surrogates, at most
    ``max_bytes`` of UTF-8; with ``level``, also usable as one topic level."""

    def check(value: object) -> str:
        if not isinstance(value, str) or (not value and not empty):
            kind = "a non-empty string" if not empty else "a string"
            raise _Invalid(f"expected {kind}, got {_show(value)}")
        if not value:
            return value
        problem = level_problem(value) if level else None
        problem = problem or text_problem(value, max_bytes)
        if problem is not None:
            raise _Invalid(f"{_show(value)} {problem}")
        return value

    return check


def _node_id(value: object) -> str:
    # Home Assistant ignores discovery topics whose node id has other characters.
    if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_-]*", value):
        raise _Invalid(f"expected letters, digits, '_' and '-' only, got {_show(value)}")
    return value


def _interval(value: object) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    number = float(value) if ok and abs(value) < 1e300 else math.nan  # type: ignore[arg-type]
    if not (number == 0.0 or 1.0 <= number <= 86_400.0):
        raise _Invalid(f"expected 0 (off) or seconds from 1 to 86400, got {_show(value)}")
    return number


@dataclass(frozen=True)
class _Key:
    """One configuration key: its default (as TOML would give it) and its check."""

    default: object
    check: Callable[[object], object]
    kind: str = "str"
    """How an override given as text is read: "str", "path", "int", "float", "bool" or
    "list" (comma-separated)."""


_path = _string()
_SCHEMA: Final[Mapping[str, _Key]] = MappingProxyType(
    {
        "model.path": _Key(
            "/var/lib/voice-agent/models/smart-home-en", _string(empty=False), "path"
        ),
        "model.runtime": _Key("auto", _choice("auto", *RUNTIMES)),
        "model.threads": _Key(1, _integer(1, 64), "int"),
        "model.room": _Key("", _string()),
        "model.room_slot": _Key("room", _string(empty=False)),
        "vosk.model": _Key(
            "/var/lib/voice-agent/vosk/vosk-model-small-en-us-0.15", _string(empty=False), "path"
        ),
        "vosk.grammar": _Key(True, _boolean, "bool"),
        "vosk.max_unk_ratio": _Key(0.5, _number(0.0, 1.0), "float"),
        "vosk.sentence_slack": _Key(
            0, _integer(-1, 100, "-1 (off) or a number of words from 0 to 100"), "int"
        ),
        "vosk.min_word_confidence": _Key(0.0, _number(0.0, 1.0), "float"),
        "vosk.beam": _Key(0.0, _number(0.0, 100.0), "float"),
        "vosk.max_active": _Key(0, _integer(0, 1_000_000), "int"),
        "vosk.lattice_beam": _Key(0.0, _number(0.0, 100.0), "float"),
        "vosk.trailing_silence": _Key(0.0, _number(0.0, 10.0), "float"),
        "vosk.frames_per_chunk": _Key(
            0, _integer(0, 1000, "0 (the model's own) or 10 ms frames from 1 to 1000"), "int"
        ),
        "vosk.sentence_pause": _Key(0.2, _number(0.0, 10.0), "float"),
        "wake.engine": _Key("micro", _choice(*WAKE_ENGINES)),
        "wake.models": _Key(["okay_nabu"], _names_list, "list"),
        "wake.cutoff": _Key(0.0, _number(0.0, 1.0), "float"),
        "wake.refractory": _Key(2.0, _number(0.0, 60.0), "float"),
        "wake.preroll": _Key(0.3, _number(0.0, 1.0), "float"),
        "wake.end_silence": _Key(0.3, _number(0.1, 5.0), "float"),
        "wake.command_timeout": _Key(8.0, _number(1.0, 60.0), "float"),
        "wake.phrase": _Key("", _string()),
        "wake.window": _Key(5.0, _number(0.0), "float"),
        "audio.source": _Key("microphone", _choice(*AUDIO_SOURCES)),
        "audio.device": _Key("", _device),
        "audio.rate": _Key(0, _rate, "int"),
        "audio.channels": _Key(0, _integer(0, 2, "0 (the device's own), 1 or 2"), "int"),
        "audio.wav": _Key("", _path, "path"),
        "audio.stall_timeout": _Key(10.0, _number(1.0, 300.0), "float"),
        "mqtt.host": _Key("localhost", _host),
        "mqtt.port": _Key(1883, _integer(1, 65535), "int"),
        "mqtt.client_id": _Key("", _mqtt_text(MAX_CLIENT_ID_BYTES)),
        "mqtt.site_id": _Key("", _mqtt_text(MAX_SITE_ID_BYTES, level=True)),
        "mqtt.username": _Key("", _mqtt_text(MAX_TOPIC_BYTES)),
        "mqtt.password": _Key("", _string()),
        "mqtt.password_file": _Key("", _path, "path"),
        "mqtt.password_env": _Key("", _env_name),
        "mqtt.tls": _Key(False, _boolean, "bool"),
        "mqtt.ca_file": _Key("", _path, "path"),
        "mqtt.cert_file": _Key("", _path, "path"),
        "mqtt.key_file": _Key("", _path, "path"),
        "mqtt.keepalive": _Key(30, _integer(1, 65535), "int"),
        "mqtt.availability_topic": _Key("", _topic(empty=True)),
        "mqtt.reconnect_min": _Key(1.0, _number(0.0), "float"),
        "mqtt.reconnect_max": _Key(60.0, _number(0.0), "float"),
        "mqtt.protocol": _Key("5", _choice(*PROTOCOLS)),
        "outbox.path": _Key("/var/lib/voice-agent/outbox.sqlite", _string(empty=False), "path"),
        "outbox.max_messages": _Key(1000, _integer(1, 10_000_000), "int"),
        "outbox.max_bytes": _Key(1_000_000, _integer(1, 10**12), "int"),
        "outbox.max_age": _Key(86_400.0, _number(1.0, 10.0**9), "float"),
        "outbox.expire_after": _Key(60.0, _number(0.0, 10.0**9), "float"),
        "query.enabled": _Key(False, _boolean, "bool"),
        "query.topic": _Key("hermes/nlu/query", _topic(empty=False)),
        "query.max_bytes": _Key(4096, _integer(64, 65536), "int"),
        "feedback.enabled": _Key(False, _boolean, "bool"),
        "feedback.wake": _Key("", _path, "path"),
        "feedback.accepted": _Key("", _path, "path"),
        "feedback.rejected": _Key("", _path, "path"),
        "feedback.device": _Key("", _device),
        "homeassistant.discovery": _Key(False, _boolean, "bool"),
        "homeassistant.prefix": _Key("homeassistant", _prefix),
        "homeassistant.node_id": _Key("", _node_id),
        "status.interval": _Key(30.0, _interval, "float"),
        "log.level": _Key("info", _choice(*LOG_LEVELS)),
    }
)
_SECTIONS: Final = tuple(dict.fromkeys(key.split(".")[0] for key in _SCHEMA))


def _names(keys: list[str]) -> list[str]:
    return [key.split(".")[1] for key in keys]


def _unknown(key: str, section: bool = False) -> str:
    """``unknown key 'x'`` with the closest known key (difflib) or the known keys."""
    if section:
        close = difflib.get_close_matches(key, _SECTIONS, n=1)
        if close:
            return f"unknown section '{_clean(key)}' (did you mean '{close[0]}'?)"
        same_name = [k for k in _SCHEMA if k.split(".")[1] == key]
        if same_name:
            return f"unknown key '{_clean(key)}' (did you mean '{same_name[0]}'?)"
        return f"unknown section '{_clean(key)}' (known: {', '.join(_SECTIONS)})"
    head, _, name = key.partition(".")
    siblings = [k for k in _SCHEMA if k.startswith(head + ".")]
    close = (
        [f"{head}.{n}" for n in difflib.get_close_matches(name, _names(siblings), n=1)]
        or [k for k in _SCHEMA if k.split(".")[1] == name]
        or [
            k
            for n in difflib.get_close_matches(name, _names(list(_SCHEMA)), n=1)
            for k in _SCHEMA
            if k.split(".")[1] == n
        ][:1]
    )
    if close:
        return f"unknown key '{_clean(key)}' (did you mean '{close[0]}'?)"
    known = ", ".join(k.split(".")[1] for k in siblings) if siblings else ", ".join(_SECTIONS)
    return f"unknown key '{_clean(key)}' (known: {known})"


# -- reading ------------------------------------------------------------------------------


def _reason(err: OSError) -> str:
    return err.strerror or type(err).__name__


MAX_FILE_BYTES: Final = 1 << 20
"""The most read from the configuration file or a secret file: a path such as /dev/zero or
a huge file by mistake must not fill the memory."""


def _read_toml(path: Path, name: str) -> dict[str, object]:
    """Parse the file; refuse a world-readable one that holds a literal password."""
    try:
        # A FIFO, a device or a folder is refused at once, not waited on.
        data, status = read_regular(path, MAX_FILE_BYTES)
    except FileProblem as refused:
        if str(refused).startswith("too large"):
            raise ConfigError(f"{name}: too large for a configuration file (over 1 MiB)") from None
        raise ConfigError(f"{name}: {refused}") from None
    mode = status.st_mode
    try:
        text = data.removeprefix(b"\xef\xbb\xbf").decode("utf-8")  # a BOM is harmless
    except UnicodeDecodeError as err:
        raise ConfigError(f"{name}: not UTF-8 text (bad byte at offset {err.start})") from None
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        message = str(err)
        where = re.search(r" \(at line (\d+), column (\d+)\)$", message)
        problem = _clean(message if where is None else message[: where.start()])
        problem = problem[:1].lower() + problem[1:]
        if where is None:
            raise ConfigError(f"{name}: invalid TOML: {problem}") from None
        raise ConfigError(
            f"{name}:{where[1]}: invalid TOML: {problem} (column {where[2]})"
        ) from None
    except (ValueError, RecursionError) as err:  # huge integers, absurd nesting
        problem = "a number is too long" if isinstance(err, ValueError) else "nested too deeply"
        raise ConfigError(f"{name}: invalid TOML: {problem}") from None
    mqtt = document.get("mqtt")
    if isinstance(mqtt, dict) and mqtt.get("password", "") != "" and mode & 0o004:
        raise ConfigError(
            f"{name}: holds mqtt.password but is world-readable;"
            f" chmod 600 {name} or use mqtt.password_file"
        )
    return document


def _coerce(kind: str, value: object) -> object:
    """An override given as text (a CLI flag) read as the key's type; anything else as is."""
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or kind in ("str", "path"):
        return value
    text = value.strip()
    try:
        if kind == "bool":
            return {"true": True, "false": False}.get(text.lower(), value)
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        if kind == "list":
            return [part.strip() for part in text.split(",")]
    except ValueError:
        pass
    return value


@dataclass(frozen=True)
class _Values:
    """Checked values by dotted key, where each came from, and which were set explicitly."""

    values: Mapping[str, object]
    origin: Mapping[str, str]
    given: frozenset[str]
    bases: Mapping[str, Path | None]

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.origin[key]}: {key}: {problem}")

    def text(self, key: str) -> str:
        value = self.values[key]
        assert isinstance(value, str)
        return value

    def path(self, key: str) -> Path | None:
        """The key's path resolved against its file's folder; None when empty."""
        text = self.text(key)
        if not text:
            return None
        base = self.bases[key]
        return base / text if base is not None else Path(text)


def _collect(
    document: Mapping[str, object], name: str, base: Path | None, overrides: Mapping[str, object]
) -> _Values:
    raw: dict[str, object] = {}
    origin = dict.fromkeys(_SCHEMA, name)
    bases: dict[str, Path | None] = dict.fromkeys(_SCHEMA, base)
    for section, table in document.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{name}: {_unknown(section, section=True)}")
        if not isinstance(table, dict):
            raise ConfigError(
                f"{name}: {section}: expected a table ([{section}]), got {_show(table)}"
            )
        for key, value in table.items():
            dotted = f"{section}.{key}"
            if dotted not in _SCHEMA:
                raise ConfigError(f"{name}: {_unknown(dotted)}")
            raw[dotted] = value
    for key, value in overrides.items():
        if value is None:
            continue
        if not isinstance(key, str) or key not in _SCHEMA:
            raise ConfigError(f"{OVERRIDES_NAME}: {_unknown(str(key))}")
        raw[key] = _coerce(_SCHEMA[key].kind, value)
        origin[key] = OVERRIDES_NAME
        bases[key] = None
    values: dict[str, object] = {}
    for key, spec in _SCHEMA.items():
        try:
            values[key] = spec.check(raw.get(key, spec.default))
        except _Invalid as bad:
            raise ConfigError(f"{origin[key]}: {key}: {bad}") from None
    return _Values(values, origin, frozenset(raw), bases)


# -- checks that need the file system or several keys -------------------------------------


def _readable(values: _Values, key: str) -> Path | None:
    """The key's file, after checking that it can be opened; None when unset."""
    path = values.path(key)
    if path is None:
        return None
    try:
        # Opening a FIFO would block the start until someone writes to it, and a device
        # (/dev/zero) never ends: only regular files (and the error open gives a folder).
        kind = path.stat().st_mode
        if stat.S_ISFIFO(kind) or stat.S_ISCHR(kind) or stat.S_ISBLK(kind) or stat.S_ISSOCK(kind):
            raise values.fail(key, f"{_clean(str(path))}: not a regular file")
        path.open("rb").close()
    except OSError as err:
        raise values.fail(key, f"{_clean(str(path))}: cannot read: {_reason(err)}") from None
    return path


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _password(values: _Values, environ: Mapping[str, str]) -> str | None:
    """The MQTT password from whichever one place names it, or None."""
    keys = ("mqtt.password", "mqtt.password_file", "mqtt.password_env")
    chosen = [key for key in keys if values.values[key] != ""]
    if len(chosen) > 1:
        raise values.fail(
            chosen[1],
            f"set only one of mqtt.password, mqtt.password_file and mqtt.password_env"
            f" ({chosen[0]} is set too)",
        )
    if not chosen:
        return None
    key = chosen[0]
    if values.values["mqtt.username"] == "":
        raise values.fail(key, "a password needs mqtt.username")
    if key == "mqtt.password":
        return _mqtt_password(values, key, values.text(key))
    if key == "mqtt.password_env":
        variable = values.text(key)
        secret = environ.get(variable)
        if not secret:
            state = "is not set" if secret is None else "is empty"
            raise values.fail(key, f"environment variable {_clean(variable)} {state}")
        return _mqtt_password(values, key, secret)
    path = _readable(values, key)
    assert path is not None
    shown = _clean(str(path))
    try:
        with path.open("rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
        if len(data) > MAX_FILE_BYTES:
            raise values.fail(key, f"{shown}: too large for a password (over 1 MiB)")
        secret = data.decode("utf-8").rstrip("\r\n")
    except OSError as err:
        raise values.fail(key, f"{shown}: cannot read: {_reason(err)}") from None
    except UnicodeDecodeError:
        raise values.fail(key, f"{shown}: not UTF-8 text") from None
    if not secret:
        raise values.fail(key, f"{shown}: is empty")
    return _mqtt_password(values, key, secret)


def _mqtt_password(values: _Values, key: str, secret: str) -> str:
    """``secret`` if MQTT can carry it (never quoted: it is a secret)."""
    try:
        size = len(secret.encode("utf-8"))
    except UnicodeEncodeError:
        raise values.fail(key, "the password is not valid UTF-8") from None
    if size > MAX_TOPIC_BYTES:
        raise values.fail(key, f"the password is longer than MQTT's {MAX_TOPIC_BYTES} bytes")
    return secret


def _mqtt(values: _Values, environ: Mapping[str, str]) -> MqttSettings:
    v = values.values
    tls = bool(v["mqtt.tls"])
    for key in ("mqtt.ca_file", "mqtt.cert_file", "mqtt.key_file"):
        if v[key] != "" and not tls:
            raise values.fail(key, "needs mqtt.tls = true")
    if v["mqtt.key_file"] != "" and v["mqtt.cert_file"] == "":
        raise values.fail("mqtt.key_file", "needs mqtt.cert_file")
    low, high = float(v["mqtt.reconnect_min"]), float(v["mqtt.reconnect_max"])  # type: ignore[arg-type]
    if low > high:
        raise values.fail(
            "mqtt.reconnect_min", f"must not exceed mqtt.reconnect_max ({low:g} > {high:g})"
        )
    files = {
        key: _readable(values, key) for key in ("mqtt.ca_file", "mqtt.cert_file", "mqtt.key_file")
    }
    password = _password(values, environ)
    port = v["mqtt.port"] if "mqtt.port" in values.given or not tls else TLS_PORT
    try:
        return MqttSettings(
            host=values.text("mqtt.host"),
            port=int(port),  # type: ignore[call-overload]
            client_id=values.text("mqtt.client_id"),
            username=values.text("mqtt.username") or None,
            password=password,
            tls=tls,
            ca_file=str(files["mqtt.ca_file"]) if files["mqtt.ca_file"] else None,
            cert_file=str(files["mqtt.cert_file"]) if files["mqtt.cert_file"] else None,
            key_file=str(files["mqtt.key_file"]) if files["mqtt.key_file"] else None,
            keepalive=int(v["mqtt.keepalive"]),  # type: ignore[call-overload]
            site_id=values.text("mqtt.site_id"),
            availability_topic=values.text("mqtt.availability_topic"),
            reconnect_min=low,
            reconnect_max=high,
            protocol=values.text("mqtt.protocol"),  # type: ignore[arg-type]
        )
    except ValueError as err:  # the checks above should make this unreachable
        raise ConfigError(f"{values.origin['mqtt.host']}: mqtt: {_clean(str(err))}") from None


def _audio(values: _Values) -> AudioConfig:
    v = values.values
    source = values.text("audio.source")
    wav = values.path("audio.wav")
    if source == "wav":
        if wav is None:
            raise values.fail("audio.wav", 'required when audio.source = "wav"')
        if not _exists(wav):
            raise values.fail("audio.wav", f"{_clean(str(wav))}: does not exist")
    if source == "stdin" and v["audio.rate"] == 0:
        raise values.fail("audio.rate", 'required (not 0) when audio.source = "stdin"')
    device = v["audio.device"]
    assert isinstance(device, str | int)
    return AudioConfig(
        source=source,
        device=None if device == "" else device,
        rate=int(v["audio.rate"]),  # type: ignore[call-overload]
        channels=int(v["audio.channels"]),  # type: ignore[call-overload]
        wav=wav,
        stall_timeout=float(v["audio.stall_timeout"]),  # type: ignore[arg-type]
    )


def _wake(values: _Values) -> WakeConfig:
    v = values.values
    engine = values.text("wake.engine")
    phrase = values.text("wake.phrase")
    if engine == "phrase" and not phrase.strip():
        raise values.fail("wake.phrase", 'required when wake.engine = "phrase"')
    if engine != "phrase" and phrase and "wake.phrase" in values.given:
        raise values.fail("wake.phrase", 'only used with wake.engine = "phrase"')
    base = values.bases["wake.models"]
    models = []
    names = v["wake.models"]
    assert isinstance(names, tuple)
    for model in names:  # type: ignore[attr-defined]
        if model in BUNDLED_WAKE_WORDS or base is None or Path(model).is_absolute():
            models.append(model)
        else:
            models.append(str(base / model))
    cutoff = float(v["wake.cutoff"])  # type: ignore[arg-type]
    return WakeConfig(
        phrase=phrase,
        window=float(v["wake.window"]),  # type: ignore[arg-type]
        engine=engine,
        models=tuple(models),
        cutoff=cutoff or None,
        refractory=float(v["wake.refractory"]),  # type: ignore[arg-type]
        preroll=float(v["wake.preroll"]),  # type: ignore[arg-type]
        end_silence=float(v["wake.end_silence"]),  # type: ignore[arg-type]
        command_timeout=float(v["wake.command_timeout"]),  # type: ignore[arg-type]
    )


def _outbox(values: _Values) -> OutboxSettings:
    v = values.values
    path = values.path("outbox.path")
    assert path is not None
    max_age = float(v["outbox.max_age"])  # type: ignore[arg-type]
    expire_after = float(v["outbox.expire_after"])  # type: ignore[arg-type]
    if expire_after > max_age:
        raise values.fail(
            "outbox.expire_after",
            f"must not exceed outbox.max_age ({expire_after:g} > {max_age:g})",
        )
    return OutboxSettings(
        path=path,
        max_messages=int(v["outbox.max_messages"]),  # type: ignore[call-overload]
        max_bytes=int(v["outbox.max_bytes"]),  # type: ignore[call-overload]
        max_age=max_age,
        expire_after=expire_after or None,
    )


def _sound(values: _Values, key: str) -> Path | None:
    """The key's WAV after checking that it is one feedback can play; None when unset."""
    path = _readable(values, key)
    if path is not None:
        try:
            read_sound(path)
        except FeedbackError as err:
            raise values.fail(key, _clean(str(err))) from None
    return path


def _feedback(values: _Values) -> FeedbackConfig:
    device = values.values["feedback.device"]
    assert isinstance(device, str | int)
    return FeedbackConfig(
        enabled=bool(values.values["feedback.enabled"]),
        wake=_sound(values, "feedback.wake"),
        accepted=_sound(values, "feedback.accepted"),
        rejected=_sound(values, "feedback.rejected"),
        device=None if device == "" else device,
    )


# -- the API ------------------------------------------------------------------------------


def config_paths(
    explicit: Path | None = None, search: tuple[Path, ...] = SEARCH_PATHS
) -> tuple[Path, ...]:
    """The files to consider, in order: the explicit one alone if given, else ``search``."""
    return (explicit,) if explicit is not None else search


def find_config(
    explicit: Path | None = None, search: tuple[Path, ...] = SEARCH_PATHS
) -> Path | None:
    """The file to load: ``explicit`` (even if missing: loading then says so), else the first of
    ``search`` that exists, else None for defaults only."""
    if explicit is not None:
        return explicit
    return next((path for path in search if _exists(path)), None)


_NO_OVERRIDES: Final[Mapping[str, object]] = MappingProxyType({})


def load_config(
    path: Path | None,
    overrides: Mapping[str, object] = _NO_OVERRIDES,
    environ: Mapping[str, str] = os.environ,
) -> Config:
    """Read ``path`` (None: defaults only), apply ``overrides`` (dotted keys, e.g. from CLI flags;
    None values are ignored) and check everything; raise :class:`ConfigError` on any problem.

    ``environ`` is the only environment read (for ``mqtt.password_env``). Relative paths in the
    file are resolved against its folder; relative paths in ``overrides`` are left relative
    to the working directory.
    """
    if path is None:
        name, document, base = DEFAULTS_NAME, {}, None
    else:
        path = Path(path)
        name = _clean(str(path))
        document = _read_toml(path, name)
        base = path.absolute().parent
    values = _collect(document, name, base, overrides)
    v = values.values

    model = values.path("model.path")
    assert model is not None
    if not _exists(model / METADATA_FILE):
        raise values.fail(
            "model.path", f"{_clean(str(model))}: not a model directory (no {METADATA_FILE})"
        )
    vosk = values.path("vosk.model")
    assert vosk is not None
    audio = _audio(values)
    mqtt = _mqtt(values, environ)
    outbox = _outbox(values)
    return Config(
        source=name,
        model=ModelConfig(
            path=model,
            runtime=values.text("model.runtime"),
            threads=int(v["model.threads"]),  # type: ignore[call-overload]
            room=values.text("model.room"),
            room_slot=values.text("model.room_slot"),
        ),
        vosk=VoskConfig(
            model=vosk,
            grammar=bool(v["vosk.grammar"]),
            max_unk_ratio=float(v["vosk.max_unk_ratio"]),  # type: ignore[arg-type]
            decoder=DecoderOptions(
                beam=float(v["vosk.beam"]) or None,  # type: ignore[arg-type]
                max_active=int(v["vosk.max_active"]) or None,  # type: ignore[call-overload]
                lattice_beam=float(v["vosk.lattice_beam"]) or None,  # type: ignore[arg-type]
                trailing_silence=float(v["vosk.trailing_silence"]) or None,  # type: ignore[arg-type]
                frames_per_chunk=int(v["vosk.frames_per_chunk"]) or None,  # type: ignore[call-overload]
            ),
            sentence_pause=float(v["vosk.sentence_pause"]),  # type: ignore[arg-type]
            sentence_slack=int(v["vosk.sentence_slack"]),  # type: ignore[call-overload]
            min_word_confidence=float(v["vosk.min_word_confidence"]),  # type: ignore[arg-type]
        ),
        wake=_wake(values),
        audio=audio,
        mqtt=mqtt,
        outbox=outbox,
        log=LogConfig(level=values.text("log.level")),
        query=QueryConfig(
            enabled=bool(v["query.enabled"]),
            topic=values.text("query.topic"),
            max_bytes=int(v["query.max_bytes"]),  # type: ignore[call-overload]
        ),
        feedback=_feedback(values),
        homeassistant=HomeAssistantConfig(
            discovery=bool(v["homeassistant.discovery"]),
            prefix=values.text("homeassistant.prefix"),
            node_id=values.text("homeassistant.node_id"),
        ),
        status=StatusConfig(interval=float(v["status.interval"])),  # type: ignore[arg-type]
    )
