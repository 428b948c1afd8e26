"""The health report: what the running daemon is doing, for MQTT and ``voice-agent status``.

Every ``status.interval`` seconds a timer thread turns :class:`Health` into one JSON
document (uptime, models, counters, outbox depth, per-stage latency percentiles), publishes
it retained to ``voice-agent/<site_id>/status`` and writes it atomically to
``status.json`` beside the outbox, where ``voice-agent status`` reads it. The audio thread
only writes five floats (one per stage) into fixed-size ring buffers per utterance; all
formatting happens on the timer thread.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from array import array
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agent import __version__
from agent.actions import Message
from agent.errors import UsageError

if TYPE_CHECKING:
    from agent.config import Config
    from agent.daemon import Counters, Daemon, Outcome
    from agent.delivery import Courier
    from agent.mqtt import MqttLink
    from agent.outbox import Outbox

__all__ = [
    "STAGES",
    "STATUS_FILE",
    "Health",
    "LatencyWindow",
    "StatusError",
    "StatusReporter",
    "describe",
    "is_fresh",
    "read_status",
    "start_health",
    "status_path",
    "status_topic",
    "write_status",
]

log = logging.getLogger(__name__)

STATUS_FILE: Final = "status.json"
STAGES: Final = ("endpoint", "recognize", "classify", "store", "publish")
"""The latency stages reported: the endpoint's trailing silence, then :class:`Timings`."""
WINDOW: Final = 256
"""Utterances per latency window: the percentiles describe the recent past, not all time."""


class StatusError(UsageError):
    """No usable status file; ``str()`` is one line naming it."""


def status_topic(site_id: str) -> str:
    """The retained topic of the health report."""
    return f"voice-agent/{site_id}/status"


def status_path(outbox_path: Path) -> Path:
    """``status.json`` in the state directory, which the outbox already owns."""
    return outbox_path.parent / STATUS_FILE


class LatencyWindow:
    """The last ``size`` samples of one stage in a preallocated ring: adding never allocates
    and memory never grows, however long the daemon runs."""

    def __init__(self, size: int = WINDOW) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._samples = array("d", bytes(8 * size))
        self._next = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, seconds: float) -> None:
        samples = self._samples
        samples[self._next] = seconds
        self._next = (self._next + 1) % len(samples)
        if self._count < len(samples):
            self._count += 1

    def percentiles(self) -> dict[str, float | int | None]:
        """p50 and p95 in milliseconds (nearest rank) and the number of samples."""
        ordered = sorted(self._samples[: self._count])
        n = len(ordered)
        if n == 0:
            return {"p50": None, "p95": None, "n": 0}

        def rank(q: float) -> float:
            return round(ordered[max(0, math.ceil(n * q) - 1)] * 1e3, 3)

        return {"p50": rank(0.50), "p95": rank(0.95), "n": n}


def _iso(seconds: float | None) -> str | None:
    if not seconds:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


class Health:
    """Running figures of one daemon; :meth:`observe` is its per-utterance hook."""

    def __init__(
        self,
        *,
        site_id: str,
        model: Mapping[str, str],
        speech_model: str,
        counters: Counters,
        outbox_depth: Callable[[], int],
        connected: Callable[[], bool],
        interval: float,
        delivery: Callable[[], Mapping[str, Any]] | None = None,
        window: int = WINDOW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.site_id = site_id
        self.model = dict(model)
        self.speech_model = speech_model
        self.counters = counters
        self.outbox_depth = outbox_depth
        self.connected = connected
        self.delivery = delivery
        """The courier's figures: ``set_aside``, ``refused`` (counts), ``disk_problem``."""
        self.interval = interval
        self.clock = clock
        self.started = clock()
        self._started_monotonic = time.monotonic()
        self.windows = {stage: LatencyWindow(window) for stage in STAGES}
        # Text commands are handled on another thread than speech.
        self._lock = threading.Lock()

    def observe(self, outcome: Outcome) -> None:
        """Record one utterance's stage timings (the counters are the daemon's own)."""
        t = outcome.timings
        w = self.windows
        with self._lock:
            w["endpoint"].add(outcome.decision.transcript.trailing_seconds)
            w["recognize"].add(t.recognize)
            w["classify"].add(t.classify)
            w["store"].add(t.store)
            w["publish"].add(t.publish)

    def snapshot(self, state: str = "running") -> dict[str, Any]:
        """The status document (plain JSON types)."""
        now = self.clock()
        with self._lock:
            latency = {stage: window.percentiles() for stage, window in self.windows.items()}
        c = self.counters
        return {
            "site_id": self.site_id,
            "state": state,
            "version": __version__,
            "pid": os.getpid(),
            "time": round(now, 3),
            "updated": _iso(now),
            "interval": self.interval,
            "started": _iso(self.started),
            "uptime": round(time.monotonic() - self._started_monotonic, 1),
            "model": self.model,
            "speech_model": self.speech_model,
            "mqtt_connected": self.connected(),
            "last_utterance": _iso(c.last_utterance),
            "outbox_depth": self.outbox_depth(),
            "delivery": dict(self.delivery()) if self.delivery is not None else {},
            "counters": {
                "recognized": c.recognized,
                "not_recognized": c.not_recognized,
                "not_sent": c.not_sent,
                "unacknowledged": c.unacknowledged,
                "wakes": c.wakes,
            },
            "latency_ms": latency,
        }


def write_status(path: Path, document: Mapping[str, Any]) -> None:
    """Replace ``path`` atomically (a temporary file, then a rename), so a reader sees the
    old report or the new one, never half of one. No fsync: a report every few seconds
    would wear the SD card, and after a power cut a stale report says what it should."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


class StatusReporter:
    """The timer thread: every ``interval`` seconds, the report to MQTT and to the file; a
    last one with ``state: stopped`` on :meth:`stop`."""

    def __init__(self, health: Health, link: MqttLink | None, path: Path | None) -> None:
        self.health = health
        self.link = link
        self.path = path
        self.topic = status_topic(health.site_id)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_problem = ""
        self._published = False

    def start(self) -> None:
        self._published = self.report()
        self._thread = threading.Thread(target=self._run, name="status", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10.0)
            self._thread = None
        self.report("stopped")

    def _run(self) -> None:
        interval = self.health.interval
        file_due = time.monotonic() + interval
        # While a report could not be published (at start, before the broker answered, or
        # in an outage) try every second, so the retained report never stays stale for a
        # whole interval; the file is still written once per interval.
        while not self._stop.wait(interval if self._published else min(1.0, interval)):
            now = time.monotonic()
            write = now + 0.1 >= file_due  # Event.wait may return a hair early
            if write:
                file_due = now + interval
            self._published = self.report(write=write)

    def report(self, state: str = "running", write: bool = True) -> bool:
        """Write (unless not ``write``) and publish one report now; whether the broker
        acknowledged it. Problems are logged once, never raised."""
        document = self.health.snapshot(state)
        if write and self.path is not None:
            try:
                write_status(self.path, document)
                self._last_problem = ""
            except OSError as err:
                problem = f"{self.path}: {err.strerror or err}"
                if problem != self._last_problem:
                    self._last_problem = problem
                    log.warning("status report not written: %s", problem)
        if self.link is None or not self.link.connected:
            return False
        payload = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
        return self.link.publish(Message(self.topic, payload.encode("utf-8"), 1, True), 5.0)


def start_health(
    config: Config,
    link: MqttLink,
    outbox: Outbox,
    daemon: Daemon,
    stack: ExitStack,
    courier: Courier | None = None,
) -> StatusReporter | None:
    """Report the daemon's health every ``status.interval`` seconds (None when 0);
    ``stack`` writes the final ``stopped`` report."""
    interval = config.status.interval
    if interval <= 0:
        return None
    info = daemon.classifier.info
    health = Health(
        site_id=config.mqtt.site_id,
        model={"name": info.name, "version": info.version, "language": info.language},
        speech_model=config.vosk.model.name,
        counters=daemon.counters,
        outbox_depth=lambda: outbox.depth,
        connected=lambda: link.connected,
        interval=interval,
        delivery=None if courier is None else lambda: delivery_figures(courier, outbox),
    )
    daemon.on_outcome.append(health.observe)
    daemon.on_models.append(
        lambda classifier: health.model.update(
            name=classifier.info.name,
            version=classifier.info.version,
            language=classifier.info.language,
        )
    )
    reporter = StatusReporter(health, link, status_path(config.outbox.path))
    reporter.start()
    stack.callback(reporter.stop)
    return reporter


def delivery_figures(courier: Courier, outbox: Outbox) -> dict[str, Any]:
    """What the health report says about delivery: messages set aside as undeliverable,
    refused by the broker (retried), the outbox's disk problem and its free space."""
    low = outbox.low_on_space()
    return {
        "set_aside": courier.set_aside,
        "refused": courier.refused,
        "disk_problem": courier.disk_problem or low,
    }


# -- voice-agent status -------------------------------------------------------------------


def read_status(path: Path) -> dict[str, Any]:
    """The last report the daemon wrote; :class:`StatusError` when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StatusError(
            f"{path}: no status file (is the service running, with status.interval > 0?)"
        ) from None
    except PermissionError:
        raise StatusError(
            f"{path}: cannot read: permission denied (run as root or the service's user)"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise StatusError(f"{path}: cannot read: {err}") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise StatusError(f"{path}:{err.lineno}: not a status report: {err.msg}") from None
    if not isinstance(document, dict) or not isinstance(document.get("time"), int | float):
        raise StatusError(f"{path}: not a status report (no 'time')")
    return document


def is_fresh(document: Mapping[str, Any], now: float) -> bool:
    """True when the report is from a daemon that is still running: not ``stopped`` and
    younger than two intervals (plus slack for a busy Pi)."""
    interval = document.get("interval")
    interval = float(interval) if isinstance(interval, int | float) and interval > 0 else 30.0
    return document.get("state") == "running" and now - float(document["time"]) <= (
        2 * interval + 5
    )


def _ms(value: object) -> str:
    return f"{value:.1f}" if isinstance(value, int | float) else "-"


def _delivery(document: Mapping[str, Any]) -> str:
    figures = document.get("delivery")
    if not isinstance(figures, dict):
        return ""
    text = ""
    if figures.get("set_aside"):
        text += f", {figures['set_aside']} SET ASIDE as undeliverable (see the log)"
    if figures.get("refused"):
        text += f", {figures['refused']} refused by the broker (retried)"
    if figures.get("disk_problem"):
        text += f"; DISK: {figures['disk_problem']}"
    return text


def describe(document: Mapping[str, Any], now: float) -> list[str]:
    """The report as lines for a terminal; the first says whether the daemon runs."""
    age = now - float(document["time"])
    if is_fresh(document, now):
        head = f"running: site {document.get('site_id')}, pid {document.get('pid')}"
    elif document.get("state") == "stopped":
        head = f"not running: stopped {age:.0f} s ago ({document.get('updated')})"
    else:
        head = f"not running: the last report is {age:.0f} s old ({document.get('updated')})"
    model = document.get("model") or {}
    counters = document.get("counters") or {}
    lines = [
        head,
        f"uptime          {float(document.get('uptime') or 0):.0f} s"
        f" (since {document.get('started')})",
        f"model           {model.get('name')} version {model.get('version')},"
        f" speech {document.get('speech_model')}",
        f"mqtt            {'connected' if document.get('mqtt_connected') else 'NOT connected'}",
        f"last utterance  {document.get('last_utterance') or 'none yet'}",
        f"outbox          {document.get('outbox_depth')} waiting{_delivery(document)}",
        f"commands        {counters.get('recognized')} recognized,"
        f" {counters.get('not_recognized')} not recognized,"
        f" {counters.get('unacknowledged')} unacknowledged, {counters.get('not_sent')} not sent",
        f"wake words      {counters.get('wakes', 0)} heard",
        "latency (ms)    stage        p50      p95    n",
    ]
    for stage, figures in (document.get("latency_ms") or {}).items():
        f = figures if isinstance(figures, dict) else {}
        lines.append(
            f"                {stage:<10} {_ms(f.get('p50')):>7}  {_ms(f.get('p95')):>7}"
            f"  {f.get('n', 0):>3}"
        )
    return lines
