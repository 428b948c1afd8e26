"""Supervision: feed systemd's watchdog only while every part of the agent is alive.

Three parts can die or hang while the process lives on: the audio loop (a sound device
stuck inside PortAudio, or a Vosk call that never returns: the recognizer runs on the
audio loop's thread, so a hung decode stops the loop's beats just as a hung device
does), paho's MQTT network thread and the courier thread that drains the outbox. A
supervisor thread sends ``WATCHDOG=1`` every ``WatchdogSec/2`` only while the audio loop
has beaten within ``stall_timeout`` and both threads are alive. Otherwise it logs once
what is dead, says so in ``STATUS=`` and stops pinging, so systemd kills the agent and
``Restart=`` starts a fresh one. A loop that resumes before systemd acts (a slow SD card)
gets its pings back, with an info line; a dead thread never does. A part whose thread
lives but which is stuck (the courier behind a link that flaps: it connects and drops
again and again and delivers nothing for two minutes) says why in ``stuck``, and counts
as dead until it delivers again.

The microphone source beats even while its device is unplugged (it yields an empty
end-of-stream every second while it looks for the device), so waiting for a device is
not mistaken for a hang.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Protocol

from agent.notify import Notifier

__all__ = ["Liveness", "Part"]

log = logging.getLogger(__name__)


class Part(Protocol):
    """Owns a background thread: :class:`agent.mqtt.MqttLink`, :class:`agent.delivery.Courier`."""

    @property
    def alive(self) -> bool:
        """Whether its thread still runs."""
        ...


class Liveness:
    """Decides, before every watchdog ping, whether the agent is still doing its job.

    ``parts`` names the threads to check, e.g. ``{"MQTT network thread": link}``; the
    audio loop reports itself through :meth:`beat`.
    """

    def __init__(
        self,
        notifier: Notifier,
        parts: Mapping[str, Part],
        stall_timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if stall_timeout <= 0:
            raise ValueError("stall_timeout must be positive")
        self.notifier = notifier
        self.parts = dict(parts)
        self.stall_timeout = stall_timeout
        self._clock = clock
        self._last_beat = clock()
        self._failing = ""
        """The problem last reported ("" while healthy): logged once, not per tick."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """The audio loop made progress: called for every item it takes from the source."""
        self._last_beat = self._clock()

    def problem(self) -> str:
        """What is dead or stuck, as one phrase; empty when everything is alive."""
        stalled = self._clock() - self._last_beat
        if stalled > self.stall_timeout:
            return f"audio loop stalled for {stalled:.0f} s (audio device or recognizer stuck)"
        for name, part in self.parts.items():
            if not part.alive:
                return f"{name} is dead"
            # A part can be alive and still not doing its job (the courier behind a link
            # that connects and drops without ever delivering): it says so in ``stuck``.
            stuck = getattr(part, "stuck", "")
            if stuck:
                return f"{name}: {stuck}"
        return ""

    def check(self) -> bool:
        """One supervision step: ping the watchdog if everything is alive; True if it did."""
        problem = self.problem()
        if not problem:
            if self._failing:
                log.info("alive again (was: %s); watchdog pings resumed", self._failing)
                self._failing = ""
            self.notifier.watchdog()
            return True
        if not self._failing:
            log.error("%s; watchdog pings stopped, so systemd will restart the agent", problem)
        self._failing = problem
        # Every tick, not once: the daemon's per-utterance status would overwrite it.
        self.notifier.status(f"unhealthy: {problem}")
        return False

    @property
    def healthy(self) -> bool:
        """False from a failed :meth:`check` until one succeeds."""
        return not self._failing

    def start(self, interval: float) -> None:
        """Check (and ping) now and every ``interval`` seconds after, on a daemon thread."""
        if self._thread is not None:
            raise RuntimeError("liveness is already running")
        self._stop.clear()
        self._last_beat = self._clock()
        self._thread = threading.Thread(
            target=self._run, args=(interval,), name="watchdog", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop checking (before the parts are stopped on shutdown, or they look dead)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self, interval: float) -> None:
        # The first ping at once: the service is healthy the moment it says READY.
        self.check()
        while not self._stop.wait(interval):
            self.check()
