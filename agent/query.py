"""Text commands over MQTT: a Hermes ``NluQuery`` is classified and acted on like speech.

``{"input": "turn on the kitchen light", "id": "...", "sessionId": "...", "siteId": "..."}``
on ``hermes/nlu/query`` (``[query] topic``) goes through the same decision, Hermes intent,
device actions and outbox as a spoken command, and is answered on ``hermes/intent/<name>``
or ``hermes/nlu/intentNotRecognized`` with its ``id`` and ``sessionId`` echoed. Off unless
``[query] enabled``: whoever may publish there may switch the devices.

Threads: paho's network thread only checks the size and queues the payload (it also
carries every PUBACK, so it must not wait for one); a worker thread parses and hands the
query to :meth:`agent.daemon.Daemon.handle`, which takes turns with the audio loop for the
classifier. A bad payload is one warning naming the cause; nothing is published for it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import queue
import threading
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import Any, Final

from agent.config import Config, QueryConfig
from agent.daemon import Daemon, Outcome, Request
from agent.mqtt import MqttLink
from agent.ratelimit import WarningLimiter
from agent.recognizer import Transcript

__all__ = ["MAX_INPUT_CHARS", "BadQuery", "Query", "QueryListener", "parse_query", "start_query"]

log = logging.getLogger(__name__)

MAX_INPUT_CHARS: Final = 500
"""Longest ``input`` accepted: a spoken command is a sentence, not a page."""
BACKLOG: Final = 16
"""Queries waiting for the worker beyond this are dropped (a flood, not a person)."""
_STOP: Final = object()


class BadQuery(ValueError):
    """A payload that is not a usable ``NluQuery``; ``str()`` is the cause, one line."""


@dataclass(frozen=True)
class Query:
    """One checked ``NluQuery``."""

    input: str
    site_id: str | None = None
    request: Request = field(default_factory=Request)


def _utf8(key: str, value: str) -> str:
    """``value``, unless it holds a lone surrogate (JSON's ``"\\ud800"`` makes one): it could
    not be written into the answer, the log or the outbox."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadQuery(f"'{key}' holds a lone surrogate (\\u{ord(value[err.start]):04x})") from None
    return value


def _optional_string(document: dict[str, Any], key: str) -> str | None:
    value = document.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadQuery(f"'{key}' must be a string, got {type(value).__name__}")
    if len(value) > MAX_INPUT_CHARS:
        raise BadQuery(f"'{key}' is longer than {MAX_INPUT_CHARS} characters")
    return _utf8(key, value)


def parse_query(payload: bytes, max_bytes: int) -> Query:
    """The ``NluQuery`` in ``payload``, or :class:`BadQuery` saying what is wrong with it.

    ``input`` is required (a non-empty string of at most :data:`MAX_INPUT_CHARS`);
    ``id``, ``sessionId`` and ``siteId`` are optional strings, ``intentFilter`` an optional
    list of intent names. Other Hermes fields (``lang``, ``wakewordId``...) are ignored.
    """
    if len(payload) > max_bytes:
        raise BadQuery(f"payload is {len(payload)} bytes (query.max_bytes is {max_bytes})")
    try:
        document = json.loads(payload.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadQuery("payload is not UTF-8") from None
    except (json.JSONDecodeError, RecursionError) as err:
        why = getattr(err, "msg", "nested too deeply")
        raise BadQuery(f"payload is not JSON ({why})") from None
    if not isinstance(document, dict):
        raise BadQuery(f"payload must be a JSON object, got {type(document).__name__}")
    text = document.get("input")
    if not isinstance(text, str) or not text.strip():
        raise BadQuery("'input' must be a non-empty string")
    if len(text) > MAX_INPUT_CHARS:
        raise BadQuery(f"'input' is {len(text)} characters (at most {MAX_INPUT_CHARS})")
    _utf8("input", text)
    names = document.get("intentFilter")
    intent_filter: tuple[str, ...] | None = None
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise BadQuery("'intentFilter' must be a list of intent names")
        intent_filter = tuple(_utf8("intentFilter", name) for name in names)
    return Query(
        input=" ".join(text.split()),
        site_id=_optional_string(document, "siteId"),
        request=Request(
            session_id=_optional_string(document, "sessionId"),
            id=_optional_string(document, "id"),
            intent_filter=intent_filter,
        ),
    )


def text_transcript(text: str) -> Transcript:
    """A typed sentence as a transcript: every word certain, none off-grammar."""
    return Transcript(
        text=text, confidence=1.0, words=(), unk_ratio=0.0, audio_seconds=0.0, decode_seconds=0.0
    )


class QueryListener:
    """Receives ``NluQuery`` payloads from the link and runs each through the daemon."""

    def __init__(self, daemon: Daemon, settings: QueryConfig, backlog: int = BACKLOG) -> None:
        self.daemon = daemon
        self.settings = settings
        self._queue: queue.Queue[object] = queue.Queue(maxsize=backlog)
        self._thread: threading.Thread | None = None
        self.warnings = WarningLimiter(log)
        """Bad or dropped queries: a flood of them must not flood the journal."""
        self.handled = 0
        """Queries that reached the daemon (accepted or not)."""

    def receive(self, topic: str, payload: bytes) -> None:
        """The link's handler, on paho's network thread: check the size, queue, return."""
        if len(payload) > self.settings.max_bytes:
            self.warnings.warning(
                "%s: dropped: payload is %d bytes (query.max_bytes is %d)",
                topic,
                len(payload),
                self.settings.max_bytes,
            )
            return
        try:
            self._queue.put_nowait(payload)
        except queue.Full:
            self.warnings.warning(
                "%s: dropped: %d queries already waiting", topic, self._queue.maxsize
            )

    def handle(self, payload: bytes) -> Outcome | None:
        """Parse one payload and run it through the daemon; None when it was dropped."""
        topic = self.settings.topic
        try:
            query = parse_query(payload, self.settings.max_bytes)
        except BadQuery as why:
            self.warnings.warning("%s: dropped: %s", topic, why)
            return None
        if query.site_id is not None and query.site_id != self.daemon.site_id:
            if log.isEnabledFor(logging.DEBUG):
                log.debug("%s: ignored: for site %r", topic, query.site_id)
            return None
        self.handled += 1
        return self.daemon.handle(text_transcript(query.input), request=query.request)

    def start(self) -> None:
        """Start the worker thread."""
        self._thread = threading.Thread(target=self._run, name="query", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Finish the query in hand (queued ones are dropped) and stop the worker."""
        if self._thread is None:
            return
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):
            self._queue.put_nowait(_STOP)
        self._thread.join(timeout)
        self._thread = None

    def _run(self) -> None:
        while (payload := self._queue.get()) is not _STOP:
            assert isinstance(payload, bytes)
            try:
                self.handle(payload)
            except Exception:  # a bug must not end text commands for good
                log.exception("%s: query failed", self.settings.topic)


def start_query(
    config: Config, link: MqttLink, daemon: Daemon, stack: ExitStack
) -> QueryListener | None:
    """Subscribe to ``[query] topic`` when ``[query] enabled``; ``stack`` stops it again.

    Call before ``link.start()`` or after: the link subscribes on every (re)connect.
    """
    if not config.query.enabled:
        return None
    listener = QueryListener(daemon, config.query)
    listener.start()
    stack.callback(listener.stop)
    link.subscribe(config.query.topic, 1, listener.receive)
    log.info("text commands on %s", config.query.topic)
    return listener
