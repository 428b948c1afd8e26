"""The daemon's loop: audio -> (wake word) -> transcript -> decision -> messages -> broker.

:class:`Daemon` owns nothing but the wiring: the recognizer, classifier, wake gate or
listener and MQTT link are built by the caller (``voice-agent run``) from the configuration
and handed in. With a :class:`~agent.listener.Listener` (wake engine "micro") only the
audio after a wake word reaches the recognizer; without one every utterance does. Each
command gives one :class:`Outcome` and one log line with the transcript, the decision and
the time spent in each stage.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent import hermes
from agent.actions import Message, render_actions
from agent.audio import END_OF_STREAM, EndOfStream, Item
from agent.classifier import IntentClassifier
from agent.decision import NO_WORDS, Decision, DecisionSettings, decide
from agent.listener import CommandAudio, Listener, Woke
from agent.notify import Notifier
from agent.recognizer import Recognizer, Transcript
from agent.wake import WakeGate

__all__ = ["Counters", "Cues", "Daemon", "Outcome", "Publisher", "Request", "Timings", "Woken"]

log = logging.getLogger(__name__)


class Publisher(Protocol):
    """Where messages go: :class:`agent.delivery.Courier` (through the on-disk outbox) in
    the service, or :class:`agent.mqtt.MqttLink` directly."""

    def publish_all(self, messages: Sequence[Message], timeout: float = 5.0) -> int:
        """Take ``messages`` in order (queue them, or send each and wait for its PUBACK);
        how many were taken."""
        ...

    def flush(self, timeout: float) -> bool:
        """Wait until everything taken so far is acknowledged; False if that is not so
        within ``timeout`` seconds (or at once, when the broker is unreachable)."""
        ...


class Cues(Protocol):
    """Sounds for the person speaking (:class:`agent.feedback.Feedback`); each call returns
    at once."""

    def wake(self) -> None: ...

    def accepted(self) -> None: ...

    def rejected(self) -> None: ...


@dataclass(frozen=True)
class Request:
    """A text command's Hermes context (``hermes/nlu/query``): the ids its answer echoes and
    the intents it allows. Speech has none."""

    session_id: str | None = None
    id: str | None = None
    intent_filter: tuple[str, ...] | None = None
    """Only these intents may be accepted; another best guess is "not recognized"."""


@dataclass(frozen=True)
class Woken:
    """The wake word a spoken command followed: its id and the session it opened (the
    ``sessionId`` of the hotword message and of everything the command leads to)."""

    wakeword_id: str
    session_id: str


INTENT_FILTER = "intent_filter"
"""Reason: the best intent was not among the request's ``intentFilter``."""


@dataclass(frozen=True)
class Timings:
    """Seconds spent on one utterance, stage by stage."""

    recognize: float
    """From the end of the utterance's audio (the chunk or end of stream that completed it)
    to the transcript: decoding only. The wait for the endpoint's silence before that is
    the transcript's ``trailing_seconds``."""
    classify: float
    store: float
    """Handing the messages to the publisher: with the outbox, one fsynced transaction."""
    publish: float
    """From then until the broker acknowledged the last of them (or the wait gave up)."""


@dataclass(frozen=True)
class Outcome:
    """What one utterance led to."""

    decision: Decision
    messages: tuple[Message, ...]
    """Everything that was to be published, Hermes messages first, then device actions."""
    queued: int
    """How many of ``messages`` the publisher took (in order: the rest were not sent)."""
    acknowledged: bool
    """Whether the broker acknowledged everything taken before the publish timeout; if not,
    the outbox keeps it and delivers it when the broker is back."""
    timings: Timings
    session_id: str
    skipped_actions: tuple[str, ...] = ()
    wakeword_id: str | None = None
    """The wake word the command followed (None without one)."""

    @property
    def complete(self) -> bool:
        """Every message was taken and acknowledged."""
        return self.queued == len(self.messages) and self.acknowledged


@dataclass
class Counters:
    """Running totals, for the systemd status line and health reports."""

    recognized: int = 0
    not_recognized: int = 0
    not_sent: int = 0
    """Messages the publisher refused (not even queued)."""
    unacknowledged: int = 0
    """Utterances whose messages were not acknowledged in time (left in the outbox)."""
    last_utterance: float = 0.0
    wakes: int = 0
    """Wake words heard (the "micro" engine's detections, the "phrase" engine's phrases)."""


class Daemon:
    """Turns a stream of audio items into published intents and device actions."""

    def __init__(
        self,
        recognizer: Recognizer,
        classifier: IntentClassifier,
        publisher: Publisher,
        *,
        site_id: str = "default",
        decision: DecisionSettings | None = None,
        wake: WakeGate | None = None,
        notifier: Notifier | None = None,
        publish_timeout: float = 5.0,
        cues: Cues | None = None,
        listener: Listener | None = None,
    ) -> None:
        self.recognizer = recognizer
        self.classifier = classifier
        self.publisher = publisher
        self.site_id = site_id
        self.decision = decision or DecisionSettings()
        self.wake = wake or WakeGate("", 0.0)
        self.notifier = notifier
        self.publish_timeout = publish_timeout
        self.cues = cues
        self.listener = listener
        # Text commands arrive on another thread; a TFLite interpreter is not thread-safe
        # and the counters are shared, so deciding and counting take turns (microseconds).
        self._lock = threading.Lock()
        self.lang = classifier.info.language or None
        self.counters = Counters()
        self.on_outcome: list[Callable[[Outcome], None]] = []
        """Called with every outcome, after counting and logging, on the thread that handled
        it (health and Home Assistant state): each must return at once and never raise."""
        self.on_models: list[Callable[[IntentClassifier], None]] = []
        """Called after a model reload (discovery and health announce the new model)."""
        self.on_wake: list[Callable[[Woken], None]] = []
        """Called on the audio thread after every wake word, like ``on_outcome``."""
        self.position = 0.0
        """Seconds of audio consumed so far (the wake window's clock)."""

    def listen(self, items: Iterable[Item]) -> Iterator[Outcome]:
        """Decode ``items`` (source items at any rate) and handle every command: with a
        listener, what follows each wake word; without, every utterance that passes the
        wake gate.

        ``self.recognizer`` is looked up per item, so :meth:`use_models` between items takes
        effect at once. (The systemd watchdog is fed by :mod:`agent.liveness`, which the
        service's item stream tells of every item.)
        """
        if self.listener is not None:
            yield from self._listen_woken(items, self.listener)
            return
        for item in items:
            if isinstance(item, EndOfStream):
                started = time.perf_counter()
                transcript = self.recognizer.finish()
            else:
                self.position += item.seconds
                started = time.perf_counter()
                transcript = self.recognizer.feed(item)
            if transcript is not None:
                outcome = self._utterance(transcript, time.perf_counter() - started)
                if outcome is not None:
                    yield outcome
        transcript = self.recognizer.finish()
        if transcript is not None:
            outcome = self._utterance(transcript, 0.0)
            if outcome is not None:
                yield outcome

    def _listen_woken(self, items: Iterable[Item], listener: Listener) -> Iterator[Outcome]:
        """The wake word loop: the recognizer hears only the listener's command audio."""
        woken: Woken | None = None
        for item in _ended(items):
            if not isinstance(item, EndOfStream):
                self.position += item.seconds
            for event in listener.push(item):
                if isinstance(event, Woke):
                    woken = self._woke(event)
                    continue
                started = time.perf_counter()
                if isinstance(event, CommandAudio):
                    transcript = self.recognizer.feed(event.chunk)
                    # A pause the recognizer ends on before any word (the wake word's echo,
                    # a breath) is not the command: keep listening for it.
                    if transcript is None or not transcript.text:
                        continue
                    listener.end_command()
                else:
                    transcript = self.recognizer.finish()
                    if transcript is None:
                        log.info("no command heard after the wake word (%s)", event.reason)
                        continue
                outcome = self._utterance(transcript, time.perf_counter() - started, woken)
                woken = None
                if outcome is not None:
                    yield outcome
                break  # the rest of this item's events belonged to the command just ended

    def _woke(self, event: Woke) -> Woken:
        """Count, cue and announce a wake word (hermes/hotword/<id>/detected)."""
        detection = event.detection
        woken = Woken(detection.wakeword_id, uuid.uuid4().hex)
        with self._lock:
            self.counters.wakes += 1
        log.info(
            "wake word %s (%.2f) at %.2f s",
            detection.wakeword_id,
            detection.probability,
            detection.position,
        )
        if self.cues is not None:
            self.cues.wake()
        assert self.listener is not None
        detector = self.listener.detector
        model = next(m for m in detector.models if m.id == detection.wakeword_id)
        message = hermes.hotword_detected(
            detection.wakeword_id,
            model_version=model.version,
            sensitivity=detector.cutoff(detection.wakeword_id),
            site_id=self.site_id,
            session_id=woken.session_id,
            lang=self.lang,
        )
        # Queued (in the service: one insert into the outbox), never waited for: the
        # command is being spoken now.
        if not self.publisher.publish_all((message,), self.publish_timeout):
            with self._lock:
                self.counters.not_sent += 1
        for observer in self.on_wake:
            observer(woken)
        return woken

    def use_models(self, classifier: IntentClassifier, recognizer: Recognizer) -> None:
        """Serve ``classifier`` and ``recognizer`` from now on (a model reload). Call between
        items, on the audio loop's thread: the recognizer has no utterance in progress then
        only if the caller finished it (the service feeds an END_OF_STREAM first)."""
        with self._lock:
            self.classifier = classifier
            self.recognizer = recognizer
            self.lang = classifier.info.language or None
        for observer in self.on_models:
            observer(classifier)

    def _utterance(
        self, transcript: Transcript, recognize: float, woken: Woken | None = None
    ) -> Outcome | None:
        verdict = self.wake.admit(transcript, self.position)
        if verdict.woke:
            with self._lock:
                self.counters.wakes += 1
        if verdict.command is None:
            if verdict.woke:
                log.info("wake phrase heard; listening for %.0f s", self.wake.window)
                if self.cues is not None:
                    self.cues.wake()
            elif log.isEnabledFor(logging.DEBUG):
                log.debug("ignored (no wake phrase): %r", transcript.text)
            return None
        outcome = self.handle(verdict.command, recognize, woken=woken)
        if self.cues is not None:
            # Noise heard as nothing (no words at all) gets no sound: only a real attempt does.
            if outcome.decision.accepted:
                self.cues.accepted()
            elif outcome.decision.reason != NO_WORDS:
                self.cues.rejected()
        return outcome

    def handle(
        self,
        transcript: Transcript,
        recognize: float = 0.0,
        request: Request | None = None,
        *,
        woken: Woken | None = None,
    ) -> Outcome:
        """Decide on one transcript, publish what follows from it, and log one line.

        Safe to call from two threads (the audio loop and text commands). With a
        ``request`` (a text command) no ``textCaptured`` is sent and its ids are echoed;
        with ``woken`` the messages carry its wake word and session.
        """
        with self._lock:
            # One model for the whole utterance, even if a reload swaps it meanwhile.
            classifier, lang = self.classifier, self.lang
            started = time.perf_counter()
            decision = decide(transcript, classifier, self.decision)
            classify = time.perf_counter() - started
        if (
            request is not None
            and request.intent_filter is not None
            and decision.accepted
            and decision.intent not in request.intent_filter
        ):
            decision = Decision(transcript, decision.classification, INTENT_FILTER)

        session_id = (
            (request.session_id if request else None)
            or (woken.session_id if woken else None)
            or uuid.uuid4().hex
        )
        wakeword_id = woken.wakeword_id if woken else None
        messages, skipped = self._messages(
            decision, session_id, request, classifier, lang, wakeword_id
        )
        started = time.perf_counter()
        queued = self.publisher.publish_all(messages, self.publish_timeout)
        stored = time.perf_counter()
        acknowledged = queued > 0 and self.publisher.flush(self.publish_timeout)
        finished = time.perf_counter()

        outcome = Outcome(
            decision,
            messages,
            queued,
            acknowledged,
            Timings(recognize, classify, stored - started, finished - stored),
            session_id,
            skipped,
            wakeword_id,
        )
        with self._lock:
            self._count(outcome)
        _log_outcome(outcome)
        for observer in self.on_outcome:
            observer(outcome)
        return outcome

    def _messages(
        self,
        decision: Decision,
        session_id: str,
        request: Request | None,
        classifier: IntentClassifier,
        lang: str | None,
        wakeword_id: str | None = None,
    ) -> tuple[tuple[Message, ...], tuple[str, ...]]:
        transcript = decision.transcript
        # A text command had no speech to capture.
        captured: tuple[Message, ...] = ()
        if request is None:
            captured = (
                hermes.text_captured(
                    transcript.text,
                    transcript.confidence,
                    transcript.decode_seconds,
                    site_id=self.site_id,
                    session_id=session_id,
                    lang=lang,
                    wakeword_id=wakeword_id,
                ),
            )
        request_id = (request.id if request else None) or session_id
        classification = decision.classification
        if not decision.accepted or classification is None:
            text = classification.text if classification is not None else transcript.text
            rejected = hermes.not_recognized(
                text, site_id=self.site_id, session_id=session_id, id=request_id
            )
            return (*captured, rejected), ()
        intent = hermes.intent(
            classification,
            site_id=self.site_id,
            session_id=session_id,
            id=request_id,
            asr_confidence=transcript.confidence,
            raw_input=transcript.text,
            lang=lang,
            wakeword_id=wakeword_id,
        )
        intent_info = classifier.info.intents[classification.label]
        actions = render_actions(intent_info, classification.slots)
        return (*captured, intent, *actions.messages), actions.skipped

    def _count(self, outcome: Outcome) -> None:
        counters = self.counters
        if outcome.decision.accepted:
            counters.recognized += 1
        else:
            counters.not_recognized += 1
        counters.not_sent += len(outcome.messages) - outcome.queued
        counters.unacknowledged += not outcome.acknowledged
        counters.last_utterance = time.time()
        if self.notifier is not None:
            self.notifier.status(
                f"{counters.recognized} commands, {counters.not_recognized} not recognized"
            )


def _log_outcome(outcome: Outcome) -> None:
    """One INFO line per utterance (formatted only when INFO is on)."""
    if not log.isEnabledFor(logging.INFO):
        return
    decision = outcome.decision
    t = outcome.timings
    c = decision.classification
    if decision.accepted and c is not None:
        slots = " ".join(f"{s.name}={s.value}" for s in c.slots)
        verdict = f"{c.intent} {c.confidence:.2f}" + (f" [{slots}]" if slots else "")
    elif c is not None:
        verdict = f"not recognized ({decision.reason}; best {c.label} {c.confidence:.2f})"
    else:
        verdict = f"not recognized ({decision.reason}; unk {decision.transcript.unk_ratio:.2f})"
    total = len(outcome.messages)
    if outcome.queued < total:
        sent = f"{outcome.queued}/{total} queued, rest NOT SENT"
    elif outcome.acknowledged:
        sent = f"{total} acknowledged"
    else:
        sent = f"{total} queued (broker has not acknowledged; kept in the outbox)"
    log.info(
        '"%s" -> %s -> %s | endpoint %.2f s, recognize %.1f ms, classify %.2f ms,'
        " store %.1f ms, publish %.1f ms",
        decision.transcript.text,
        verdict,
        sent,
        decision.transcript.trailing_seconds,
        t.recognize * 1e3,
        t.classify * 1e3,
        t.store * 1e3,
        t.publish * 1e3,
    )
    for why in outcome.skipped_actions:
        log.warning("action skipped: %s", why)


def _ended(items: Iterable[Item]) -> Iterator[Item]:
    """``items``, then an end of stream (the command in progress at the end is finished)."""
    yield from items
    yield END_OF_STREAM
