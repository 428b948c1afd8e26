"""``voice-agent run``: build the daemon from the configuration and run it until told to stop.

Everything that can fail for a human reason (a missing model, a bad WAV, no microphone)
fails here, before READY is sent, as one line and exit status 2. A broker that cannot be
reached is not such a reason: the link keeps retrying in the background and says so.
"""

from __future__ import annotations

import itertools
import logging
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from types import FrameType

from agent.audio import (
    END_OF_STREAM,
    Item,
    PortAudio,
    microphone_source,
    stdin_source,
    wav_folder_source,
    wav_source,
)
from agent.classifier import IntentClassifier, resolve_fill
from agent.config import Config, WakeConfig
from agent.daemon import Daemon, Outcome, Publisher
from agent.delivery import Courier
from agent.discovery import start_homeassistant
from agent.feedback import start_feedback
from agent.health import start_health
from agent.listener import Listener, ListenerSettings
from agent.liveness import Liveness
from agent.metadata import ModelError, load_model_info
from agent.mqtt import MqttLink
from agent.notify import Notifier
from agent.outbox import Outbox
from agent.query import start_query
from agent.recognizer import Recognizer, RecognizerError, RecognizerSettings, load_grammar
from agent.tflite import RuntimeUnavailable
from agent.topics import printable
from agent.wake import WakeGate
from agent.wakeword import WakeWordDetector, load_model

__all__ = [
    "RunOptions",
    "audio_items",
    "build_daemon",
    "build_listener",
    "load_models",
    "run",
    "start_delivery",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """How ``run`` behaves beyond the configuration file."""

    once: bool = False
    """Handle one utterance (accepted or not), then exit."""
    connect_timeout: float = 10.0
    """Seconds to wait for the broker before listening (it is retried after that, too)."""


def setup_logging(level: int) -> None:
    """Log to stderr, which systemd's journal stamps with time and unit; a terminal gets times.

    Only the ``agent`` loggers get ``level``, so a host program's (or pytest's) own logging
    setup is left alone.
    """
    fmt = "%(levelname)s %(name)s: %(message)s"
    if sys.stderr.isatty():
        fmt = "%(asctime)s " + fmt
    logging.basicConfig(format=fmt, stream=sys.stderr)  # no-op if the root has handlers
    logging.getLogger("agent").setLevel(level)


def audio_items(config: Config, portaudio: PortAudio | None = None) -> Iterator[Item]:
    """The configured audio source (a microphone shares ``portaudio`` with the feedback)."""
    audio = config.audio
    if audio.source == "wav":
        assert audio.wav is not None  # the configuration checked it
        if audio.wav.is_dir():
            return wav_folder_source(audio.wav)
        return wav_source(audio.wav)
    if audio.source == "stdin":
        return stdin_source(audio.rate, audio.channels or 1)
    return microphone_source(
        audio.device,
        audio.rate or None,
        audio.channels or None,
        stall_timeout=audio.stall_timeout,
        portaudio=portaudio,
    )


def build_listener(wake: WakeConfig) -> Listener | None:
    """The wake word listener of engine "micro" (None for the others); raises
    WakeWordError with one line for a model that cannot be used."""
    if wake.engine != "micro":
        return None
    detector = WakeWordDetector(wake.models, wake.cutoff, wake.refractory)
    settings = ListenerSettings(wake.preroll, wake.end_silence, wake.command_timeout)
    log.info(
        "wake word: %s",
        ", ".join(
            f"{m.id} ({m.wake_word!r}, cutoff {detector.cutoff(m.id):.2f})" for m in detector.models
        ),
    )
    return Listener(detector, settings)


def build_daemon(config: Config, publisher: Publisher, notifier: Notifier | None) -> Daemon:
    """Load the models (intent, speech, wake word) and wire them to ``publisher``."""
    model = config.model
    listener = build_listener(config.wake)
    classifier = IntentClassifier.load(model.path, model.runtime, model.threads, model.fill)
    phrase = config.wake.phrase if config.wake.engine == "phrase" else ""
    wake = WakeGate(phrase, config.wake.window)
    grammar = load_grammar(config.model.path) if config.vosk.grammar else None
    vosk = config.vosk
    settings = RecognizerSettings(
        model_dir=vosk.model,
        grammar=wake.grammar(grammar) if grammar is not None else None,
        decoder=vosk.decoder,
        sentence_pause=vosk.sentence_pause,
    )
    recognizer = Recognizer(settings)
    log.info(
        "models loaded: intents %s (%d labels, %s), speech %s (%s, %.1f s)",
        classifier.info.name,
        len(classifier.info.labels),
        classifier.runtime,
        vosk.model,
        "grammar" if recognizer.grammar_json is not None else "open vocabulary",
        recognizer.load_seconds,
    )
    return Daemon(
        recognizer,
        classifier,
        publisher,
        site_id=config.mqtt.site_id,
        decision=vosk.decision,
        wake=wake,
        notifier=notifier,
        listener=listener,
    )


def start_delivery(config: Config, stack: ExitStack) -> tuple[Outbox, MqttLink, Courier]:
    """Open the outbox, connect to the broker and start the courier that drains one into
    the other. ``stack`` undoes it in reverse: the courier stops, the link says offline,
    and the outbox closes with whatever was not acknowledged still in it."""
    outbox = stack.enter_context(Outbox(config.outbox))
    link = MqttLink(config.mqtt)
    courier = Courier(outbox, link)
    link.start()
    stack.callback(link.stop)
    courier.start()
    stack.callback(courier.stop)
    return outbox, link, courier


def load_models(config: Config, daemon: Daemon) -> tuple[IntentClassifier, Recognizer]:
    """The intent model as ``model.path`` holds it now, and a recognizer for its grammar
    (the daemon's own when the grammar is unchanged; otherwise one sharing its loaded Vosk
    model, which costs milliseconds, not the seconds of loading the model again).

    Raises ModelError or RecognizerError with one line naming the file and the cause.
    """
    model = config.model
    classifier = IntentClassifier.load(model.path, model.runtime, model.threads, model.fill)
    recognizer = daemon.recognizer
    if config.vosk.grammar:
        grammar = daemon.wake.grammar(load_grammar(model.path))
        if grammar != recognizer.settings.grammar:
            recognizer = recognizer.with_grammar(grammar)
    return classifier, recognizer


class _Stop(Exception):
    """Raised in the main thread by SIGTERM/SIGINT to leave the audio loop."""


@dataclass
class _Requests:
    """What signal handlers ask of the audio loop: a handler only sets a flag, the loop does
    the work between two items."""

    reload: bool = False
    stop: str | None = None
    """The stop signal's name. Its handler also raises :class:`_Stop` to interrupt a blocking
    read, but an exception raised while a log line is being written is swallowed by
    logging, so the loop checks this too."""

    def stop_now(self, signum: int, frame: FrameType | None) -> None:
        self.stop = signal.Signals(signum).name
        raise _Stop(self.stop)


def _reload(config: Config, daemon: Daemon, notifier: Notifier) -> Iterator[Item]:
    """Reload the models (SIGHUP, ``systemctl reload``) from the audio loop.

    On success it yields END_OF_STREAM first, so that the old models finish the utterance in
    progress, and swaps once the daemon has taken it; on failure it logs one line and the
    old models keep serving. Either way systemd hears RELOADING=1, then READY=1.
    """
    old = daemon.classifier.info
    notifier.reloading("reloading the intent model")
    started = time.perf_counter()
    try:
        classifier, recognizer = load_models(config, daemon)
    except Exception as err:
        # Whatever a broken file makes a library raise, it is never worth the serving model.
        known = isinstance(err, ModelError | RecognizerError | RuntimeUnavailable)
        # One line whatever the library wrote (a traceback-like text, a NUL, a surrogate).
        cause = printable(str(err) if known else f"{type(err).__name__}: {err}")
        log.error("model reload failed, still serving %s %s: %s", old.name, old.version, cause)
        notifier.ready(f"listening ({_source_name(config)}); model reload failed: {cause}")
        return
    grammar = "unchanged" if recognizer is daemon.recognizer else "updated"
    yield END_OF_STREAM
    daemon.use_models(classifier, recognizer)
    info = classifier.info
    log.info(
        "model reloaded: intents %s %s (%d labels, grammar %s) in %.0f ms",
        info.name, info.version, len(info.labels), grammar,
        (time.perf_counter() - started) * 1e3,
    )  # fmt: skip
    notifier.ready(f"listening ({_source_name(config)}); model {info.name} {info.version}")


def _supervised(
    items: Iterator[Item],
    config: Config,
    daemon: Daemon,
    requests: _Requests,
    notifier: Notifier,
    liveness: Liveness | None,
) -> Iterator[Item]:
    """``items`` as the audio loop takes them: each one tells ``liveness`` the loop is alive
    (a hung device or Vosk call stops these beats), and a requested reload happens here,
    between two items."""
    for item in items:
        if requests.stop is not None:
            raise _Stop(requests.stop)
        if liveness is not None:
            liveness.beat()
        if requests.reload:
            requests.reload = False
            yield from _reload(config, daemon, notifier)
        yield item


def run(config: Config, options: RunOptions, environ: Mapping[str, str], pid: int) -> int:
    """Run the daemon; the exit status (0: fine; with ``once``, 1 when not recognized)."""
    setup_logging(config.log.level_number)
    notifier = Notifier.from_environ(environ, pid)
    last: Outcome | None = None
    # A broken model directory is refused before the outbox and the broker are touched, so
    # its one line is all there is to read (the models themselves load below).
    resolve_fill(load_model_info(config.model.path), config.model.fill)
    if config.vosk.grammar:
        load_grammar(config.model.path)
    if config.wake.engine == "micro":
        for wake_model in config.wake.models:
            load_model(wake_model)
    with ExitStack() as stack:
        outbox, link, courier = start_delivery(config, stack)
        daemon = build_daemon(config, courier, notifier)
        start_homeassistant(config, link, daemon, stack)
        start_health(config, link, outbox, daemon, stack, courier)
        portaudio = PortAudio()
        daemon.cues = start_feedback(config, stack, portaudio)
        start_query(config, link, daemon, stack)
        # The first item opens the source (the microphone stream, the first WAV), so a
        # missing device or a bad file fails here, before READY, as one line. (From a pipe
        # it waits for the writer, which may wait for "online": so the link starts first.)
        items = audio_items(config, portaudio)
        first = next(items, None)
        if first is not None:
            items = itertools.chain((first,), items)
        stack.callback(notifier.stopping)
        requests = _Requests()
        previous = {s: signal.signal(s, requests.stop_now) for s in (signal.SIGTERM, signal.SIGINT)}
        previous[signal.SIGHUP] = signal.signal(
            signal.SIGHUP, lambda signum, frame: setattr(requests, "reload", True)
        )
        for signum, handler in previous.items():
            stack.callback(signal.signal, signum, handler)
        try:
            if not link.wait_connected(options.connect_timeout):
                log.warning(
                    "MQTT broker %s not reachable yet; listening anyway, retrying in the"
                    " background",
                    config.mqtt.address,
                )
            notifier.ready(f"listening ({_source_name(config)})")
            log.info("listening (%s)", _source_name(config))
            liveness = _watch(config, notifier, link, courier, stack)
            items = _supervised(items, config, daemon, requests, notifier, liveness)
            for outcome in daemon.listen(items):
                last = outcome
                if options.once:
                    break
            # A finite source (files, a pipe) ended: deliver what is queued before leaving.
            if outbox.depth and not courier.wait_drained(options.connect_timeout):
                log.warning("%d messages not acknowledged; kept in the outbox", outbox.depth)
        except _Stop as why:
            log.info("stopping (%s)", why)
    if options.once:
        if last is None:
            log.warning("no speech heard")
            return 1
        return 0 if last.decision.accepted and last.complete else 1
    return 0


def _watch(
    config: Config, notifier: Notifier, link: MqttLink, courier: Courier, stack: ExitStack
) -> Liveness | None:
    """Start feeding the systemd watchdog (when it expects pings) while everything lives;
    stopped first on the way out, so that the link and courier stopping do not look dead."""
    interval = notifier.watchdog_interval
    if interval is None:
        return None
    parts = {"MQTT network thread": link, "courier thread": courier}
    liveness = Liveness(notifier, parts, config.audio.stall_timeout)
    liveness.start(interval)
    stack.callback(liveness.stop)
    return liveness


def _source_name(config: Config) -> str:
    audio = config.audio
    if audio.source == "wav":
        return f"wav {audio.wav}"
    if audio.source == "stdin":
        return f"stdin {audio.rate} Hz"
    return f"microphone {audio.device if audio.device is not None else 'default'}"
