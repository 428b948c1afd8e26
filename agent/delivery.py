"""The courier: one thread that drains the outbox through the MQTT link, oldest first.

One message is in flight at a time: the next is published only after the broker's PUBACK
for the previous one. With several in flight, a lost connection leaves a gap that paho
re-sends after newer ones, and the order is gone; one at a time costs a round trip per
message (well under a millisecond on a LAN, next to the outbox's fsync per ack), which is
nothing at speaking rate. A message can still arrive twice (the PUBACK was lost, or paho
re-sent what was in flight when the connection dropped): both copies carry the same
outbox id, so consumers can drop the second.

A message the broker *refuses* (an MQTT 5 PUBACK with a failure reason code, typically
0x87 "Not authorized" from its ACL) is set aside rather than allowed to block the queue:
it stays in the outbox, logged once with the topic and the reason, and is retried with
backoff (from ``retry_delay`` doubling to ``refused_max``) until the broker takes it or
the outbox expires it; the messages behind it keep flowing. Strict order would let one
misconfigured ACL on one device's topic hold up every other command for as long as the
refused one lives (``outbox.expire_after``), i.e. turn one broken device into a dead
agent. The price: a refused message that the broker later accepts (the ACL was fixed)
arrives after newer ones. Order is kept among everything else, and per topic as long as
an ACL refuses the whole topic.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Sequence

from agent.actions import Message
from agent.mqtt import MqttLink, backoff
from agent.outbox import Entry, Outbox

logger = logging.getLogger(__name__)

LATE: float = 1.0
"""Seconds after which a delivery is worth an info line (it waited for the broker)."""


class _SetAside:
    """A refused entry's retry schedule (in memory: after a restart it is tried again)."""

    __slots__ = ("attempts", "due")

    def __init__(self) -> None:
        self.attempts = 0
        self.due = 0.0


class Courier:
    """Publishes the outbox's entries in order and acks each one on the broker's PUBACK.

    Shutdown order for the daemon: ``courier.stop()``, then ``link.stop()``, then
    ``outbox.close()``; whatever was not delivered stays in the outbox for the next start.
    """

    def __init__(
        self,
        outbox: Outbox,
        link: MqttLink,
        *,
        retry_delay: float = 0.5,
        publish_timeout: float = 5.0,
        prune_interval: float = 1.0,
        refused_max: float = 60.0,
    ) -> None:
        """``retry_delay``: seconds between attempts while the broker is away (each one
        also prunes); ``prune_interval``: at most this long between prunes while sending;
        ``refused_max``: the longest wait between retries of a message the broker refused."""
        if min(retry_delay, publish_timeout, prune_interval, refused_max) <= 0:
            raise ValueError(
                "retry_delay, publish_timeout, prune_interval and refused_max must be positive"
            )
        self.outbox = outbox
        self.link = link
        self.retry_delay = retry_delay
        self.publish_timeout = publish_timeout
        self.prune_interval = prune_interval
        self.refused_max = max(refused_max, retry_delay)
        self._aside: dict[int, _SetAside] = {}
        """Refused entries by seq, waiting for their next try."""
        self._rng = random.Random()
        self._wake = threading.Event()
        self._progress = threading.Condition()
        self._stopping = False
        self._last_prune = -float("inf")
        self._last_problem = ""
        self._sent = 0
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:
        return f"Courier({self.outbox!r}, sent={self._sent}, running={self.running})"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def alive(self) -> bool:
        """The courier thread runs (what :mod:`agent.liveness` checks before each watchdog
        ping; the same as :attr:`running`)."""
        return self.running

    @property
    def sent(self) -> int:
        """Messages delivered (acknowledged by the broker) since ``start``."""
        return self._sent

    @property
    def refused(self) -> int:
        """Messages the broker refused that wait in the outbox for their next try."""
        return len(self._aside)

    def start(self) -> None:
        """Start draining on a daemon thread; entries left from a previous run go first."""
        if self.running:
            raise RuntimeError("the courier is already running")
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="courier", daemon=True)
        self._thread.start()

    def submit(
        self,
        message: Message,
        *,
        id: str | None = None,  # shadows the builtin: the Hermes field is called id
        expire_after: float | None = None,
    ) -> Entry:
        """Store ``message`` in the outbox (durably) and wake the courier to send it.

        The one call the daemon makes per action; arguments as :meth:`Outbox.put`.
        """
        entry = self.outbox.put(message, id=id, expire_after=expire_after)
        self._wake.set()
        return entry

    def publish(self, message: Message, timeout: float = 5.0) -> bool:
        """:meth:`publish_all` of one message, in the shape of ``MqttLink.publish``: True
        once it is durably queued, False (with a warning) when it cannot be."""
        return self.publish_all((message,), timeout) == 1

    def publish_all(self, messages: Sequence[Message], timeout: float = 5.0) -> int:
        """Queue ``messages`` (one utterance's) in one durable transaction; how many were
        queued: all, or 0 with a warning. ``timeout`` is not needed (one local fsync)."""
        try:
            self.outbox.put_many(messages)
        except (ValueError, sqlite3.Error) as err:
            logger.warning("not queued for %s: %s", ", ".join(m.topic for m in messages), err)
            return 0
        self._wake.set()
        return len(messages)

    def wake(self) -> None:
        """Look at the outbox now (after ``Outbox.put`` was called directly)."""
        self._wake.set()

    def wait_drained(self, timeout: float) -> bool:
        """Block until the outbox is empty or ``timeout`` seconds pass; True when empty.

        Returns False as soon as all that is left was refused by the broker (set aside),
        so that the daemon does not sit out a publish timeout per utterance behind it.
        """
        with self._progress:
            self._progress.wait_for(lambda: self.outbox.depth <= len(self._aside), timeout)
            return self.outbox.depth == 0

    def flush(self, timeout: float) -> bool:
        """Wait for every queued message to be acknowledged (the ``Publisher`` protocol of
        :mod:`agent.daemon`); False at once while the broker is unreachable."""
        if not self.link.connected:
            return False
        return self.wait_drained(timeout)

    def stop(self, timeout: float | None = None) -> None:
        """Stop after the publish in progress (if any); undelivered entries stay queued.

        ``timeout``: seconds to wait for the thread; None waits up to one publish timeout.
        """
        self._stopping = True
        self._wake.set()
        thread = self._thread
        if thread is None:
            return
        thread.join(self.publish_timeout + 1.0 if timeout is None else timeout)
        if thread.is_alive():
            logger.warning("courier did not stop within the timeout")
        else:
            self._thread = None

    # -- the courier thread ---------------------------------------------------------------

    def _run(self) -> None:
        while True:
            # Cleared before looking, so a submit (or stop) from now on ends the wait at
            # once; stop() sets the flag before the event, so this check cannot miss it.
            self._wake.clear()
            if self._stopping:
                return
            try:
                delay = self._step()
                self._last_problem = ""
            except Exception as err:
                # The outbox or the link failed unexpectedly (disk full, I/O error): keep
                # retrying, since a dead courier would strand every command for months.
                self._problem(f"{type(err).__name__}: {err}")
                delay = self.retry_delay
            with self._progress:
                self._progress.notify_all()
            if delay != 0.0:
                self._wake.wait(delay)

    def _next(self, clock: float) -> tuple[Entry | None, float | None]:
        """The oldest entry that is not set aside (or whose retry is due), else how long
        until the next retry is (None: the outbox is empty)."""
        aside = self._aside
        # The set-aside entries are among the oldest, so one more than them finds the
        # oldest sendable one; with none set aside this is peek(1).
        head = self.outbox.peek(len(aside) + 1)
        for entry in head:
            held = aside.get(entry.seq)
            if held is None or held.due <= clock:
                return entry, 0.0
        if not aside:
            return None, None
        return None, max(0.0, min(held.due for held in aside.values()) - clock)

    def _step(self) -> float | None:
        """Send at most one entry; seconds to wait before the next step (None: until woken)."""
        now = self.outbox.clock()
        clock = time.monotonic()
        entry, wait = self._next(clock)
        # prune before sending, so an expired command is dropped (and logged), not replayed;
        # the full prune scans the table, hence at most once per interval while draining.
        expired = entry is not None and entry.expired(now)
        if expired or clock - self._last_prune >= self.prune_interval:
            self._last_prune = clock
            for dropped in self.outbox.prune(now):
                self._aside.pop(dropped.entry.seq, None)
            entry, wait = self._next(clock)
        if entry is None:
            # Set-aside entries must still expire on time: look again within prune_interval.
            return None if wait is None else min(wait, self.prune_interval)
        if not self.link.connected:
            return self.retry_delay
        receipt = self.link.deliver(entry.message, self.publish_timeout, id=entry.id)
        if receipt.refused:
            self._set_aside(entry, receipt.refused, receipt.not_authorized)
            return 0.0
        if not receipt.acknowledged:
            return self.retry_delay
        self.outbox.ack(entry.seq)
        if self._aside.pop(entry.seq, None) is not None:
            logger.info(
                "broker %s accepted #%d id=%s %s after refusing it",
                self.link.settings.address, entry.seq, entry.id, entry.message.topic,
            )  # fmt: skip
        self._sent += 1
        waited = self.outbox.clock() - entry.created
        if waited >= LATE:
            logger.info(
                "delivered #%d id=%s %s after %.1f s",
                entry.seq, entry.id, entry.message.topic, waited,
            )  # fmt: skip
        else:
            logger.debug("delivered #%d id=%s %s", entry.seq, entry.id, entry.message.topic)
        return 0.0

    def _set_aside(self, entry: Entry, reason: str, not_authorized: bool) -> None:
        held = self._aside.get(entry.seq)
        if held is None:
            held = self._aside[entry.seq] = _SetAside()
        settings = self.link.settings
        delay = backoff(held.attempts, self.retry_delay, self.refused_max, self._rng)
        held.attempts += 1
        held.due = time.monotonic() + delay
        if held.attempts == 1:
            hint = (
                f"check the broker's ACL for {settings.username or 'anonymous clients'}"
                if not_authorized
                else "see the broker's log"
            )
            logger.error(
                "broker %s refused #%d id=%s %s: %s; %s. Kept in the outbox, retrying"
                " (next in %.1f s); the messages behind it go on",
                settings.address, entry.seq, entry.id, entry.message.topic, reason, hint, delay,
            )  # fmt: skip
        else:
            logger.debug(
                "broker refused #%d %s again: %s; next try in %.1f s",
                entry.seq, entry.message.topic, reason, delay,
            )  # fmt: skip

    def _problem(self, text: str) -> None:
        # One error line per distinct problem, not one per retry.
        if text != self._last_problem:
            self._last_problem = text
            logger.error("courier: %s; retrying every %.1f s", text, self.retry_delay)
        else:
            logger.debug("courier: %s", text)
