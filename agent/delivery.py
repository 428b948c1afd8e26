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

A message that can never be delivered (the broker drops the connection each time it is
sent, e.g. one over mosquitto's ``max_packet_size``, or it is over the maximum packet size
the broker announced) is *set aside* for good after ``poison_after`` failed attempts (at
once for the packet size): moved to the outbox's ``set_aside`` table with its cause, logged
once, counted in the health report, never sent; the ones behind it go out.

The outbox is the only thing that retransmits (the link discards paho's own copies on
every disconnect), the expiry is checked immediately before every send, and an entry the
broker acknowledged is never published again, even when the disk refuses to delete it
(full, read-only): its seq is remembered and the delete retried until it works.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Sequence

from agent.actions import Message
from agent.mqtt import MqttLink, Receipt, backoff
from agent.outbox import Entry, Outbox

logger = logging.getLogger(__name__)

LATE: float = 1.0
"""Seconds after which a delivery is worth an info line (it waited for the broker)."""
FLAPPING: float = 120.0
"""Seconds with messages waiting, the link having connected more than once and nothing
delivered, after which the courier counts as stuck (the watchdog stops): a link that
connects and drops without ever delivering is not alive."""


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
        poison_after: int = 3,
        flapping: float = FLAPPING,
    ) -> None:
        """``retry_delay``: seconds between attempts while the broker is away (each one
        also prunes); ``prune_interval``: at most this long between prunes while sending;
        ``refused_max``: the longest wait between retries of a message the broker refused;
        ``poison_after``: attempts in a row that lost the connection while in flight
        after which a message is set aside for good; ``flapping``: see :data:`FLAPPING`."""
        if poison_after < 1:
            raise ValueError("poison_after must be at least 1")
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
        self.poison_after = poison_after
        self.flapping = flapping
        self._failures: dict[int, int] = {}
        """Failed attempts in a row, by seq (only the entry being sent has any)."""
        self._done: dict[int, str] = {}
        """Entries never to send again whose removal the disk refused, by seq, with why
        (delivered, expired, set aside); their delete is retried on every step."""
        self._poisoned = 0
        self._disk_problem = ""
        self._stalled_since: float | None = None
        self._stalled_connects = 0
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

    @property
    def set_aside(self) -> int:
        """Messages set aside as undeliverable (in the outbox's ``set_aside`` table, or in
        memory while the disk refuses the move)."""
        # A copy: the health report's thread reads while the courier's thread writes.
        return self.outbox.held + sum(why == "set aside" for why in self._done.copy().values())

    @property
    def disk_problem(self) -> str:
        """The outbox file's current failure (one line), or "" while it works."""
        return self._disk_problem

    @property
    def stuck(self) -> str:
        """Why the courier is not doing its job although its thread runs, or "": the link
        connected and dropped again and again for ``flapping`` seconds without delivering
        one waiting message (:mod:`agent.liveness` then stops the watchdog)."""
        since = self._stalled_since
        if since is None or not self.running:
            return ""
        stalled = time.monotonic() - since
        reconnects = self.link.connects - self._stalled_connects
        if stalled < self.flapping or reconnects < 2:
            return ""
        return (
            f"nothing delivered for {stalled:.0f} s with messages waiting although the MQTT"
            f" link connected {reconnects} times (a flapping link)"
        )

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
            # Entries in _done were delivered (or expired); only their removal is pending.
            self._progress.wait_for(
                lambda: self.outbox.depth - len(self._done) <= len(self._aside), timeout
            )
            return self.outbox.depth - len(self._done) == 0

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
        # The set-aside (and done) entries are among the oldest, so one more than them finds
        # the oldest sendable one; with none set aside this is peek(1).
        head = self.outbox.peek(len(aside) + len(self._done) + 1)
        for entry in head:
            if entry.seq in self._done:
                continue
            held = aside.get(entry.seq)
            if held is None or held.due <= clock:
                return entry, 0.0
        if not aside:
            return None, None
        return None, max(0.0, min(held.due for held in aside.values()) - clock)

    def _step(self) -> float | None:
        """Send at most one entry; seconds to wait before the next step (None: until woken)."""
        self._finish_done()
        now = self.outbox.clock()
        clock = time.monotonic()
        entry, wait = self._next(clock)
        # prune before sending, so an expired command is dropped (and logged), not replayed;
        # the full prune scans the table, hence at most once per interval while draining.
        expired = entry is not None and entry.expired(now)
        if expired or clock - self._last_prune >= self.prune_interval:
            self._last_prune = clock
            self._prune(now)
            entry, wait = self._next(clock)
        self._watch_progress(entry is not None, clock)
        if entry is None:
            # Set-aside entries must still expire on time, and removals the disk refused
            # are retried: look again within prune_interval.
            if wait is None and not self._done:
                return None
            return min(self.prune_interval if wait is None else wait, self.prune_interval)
        if not self.link.connected:
            return self.retry_delay
        now = self.outbox.clock()
        if entry.expired(now):
            # Checked again immediately before the send: pruning or waiting for the link
            # may have taken long enough for the head to expire meanwhile.
            self._last_prune = -float("inf")
            return 0.0
        expires_in = None
        if entry.expire_after is not None:
            expires_in = entry.expire_after - abs(now - entry.created)
        receipt = self.link.deliver(
            entry.message, self.publish_timeout, id=entry.id, expires_in=expires_in
        )
        if receipt.refused:
            self._set_aside(entry, receipt.refused, receipt.not_authorized)
            return 0.0
        if not receipt.acknowledged:
            return self._failed(entry, receipt)
        self._failures.pop(entry.seq, None)
        self._stalled_since = None
        self._sent += 1
        self._remove(entry, "delivered")
        if self._aside.pop(entry.seq, None) is not None:
            logger.info(
                "broker %s accepted #%d id=%s %s after refusing it",
                self.link.settings.address, entry.seq, entry.id, entry.message.topic,
            )  # fmt: skip
        waited = self.outbox.clock() - entry.created
        if waited >= LATE:
            logger.info(
                "delivered #%d id=%s %s after %.1f s",
                entry.seq, entry.id, entry.message.topic, waited,
            )  # fmt: skip
        else:
            logger.debug("delivered #%d id=%s %s", entry.seq, entry.id, entry.message.topic)
        return 0.0

    def _prune(self, now: float) -> None:
        try:
            dropped = self.outbox.prune(now)
        except sqlite3.Error as err:
            # The expired ones cannot be deleted: remember them, so they are never sent.
            self._disk(err)
            for entry in self.outbox.peek(len(self._aside) + len(self._done) + 64):
                if entry.expired(now) and entry.seq not in self._done:
                    logger.warning(
                        "outbox: #%d id=%s %s expired; not sent (its removal waits for the disk)",
                        entry.seq, entry.id, entry.message.topic,
                    )  # fmt: skip
                    self._done[entry.seq] = "expired"
            return
        for item in dropped:
            self._aside.pop(item.entry.seq, None)
            self._failures.pop(item.entry.seq, None)

    def _remove(self, entry: Entry, why: str) -> None:
        """Take a delivered entry out of the outbox; when the disk refuses, remember it."""
        try:
            self.outbox.ack(entry.seq)
        except sqlite3.Error as err:
            self._done[entry.seq] = why
            self._disk(err, f"#{entry.seq} id={entry.id} was {why} and will not be sent again")
            return
        self._disk_ok()

    def _finish_done(self) -> None:
        """Retry the removals the disk refused (it may have room again)."""
        for seq, why in tuple(self._done.items()):
            try:
                if why == "set aside":
                    self.outbox.set_aside(seq, "set aside while the disk was full")
                elif why == "expired":
                    self.outbox.prune()
                else:
                    self.outbox.ack(seq)
            except sqlite3.Error as err:
                self._disk(err)
                return
            del self._done[seq]
        if not self._done:
            self._disk_ok()

    def _disk(self, err: sqlite3.Error, detail: str = "") -> None:
        text = f"outbox {self.outbox.settings.path}: {err}"
        if text != self._disk_problem:
            self._disk_problem = text
            more = f"; {detail}" if detail else ""
            logger.error("%s%s; delivery goes on, retrying the removal", text, more)

    def _disk_ok(self) -> None:
        if self._disk_problem:
            logger.info("%s: resolved, the outbox is writable again", self._disk_problem)
            self._disk_problem = ""

    def _failed(self, entry: Entry, receipt: Receipt) -> float:
        """An attempt that came to nothing: retry, or set the entry aside for good when it
        cannot be delivered (too big for the broker) or failed ``poison_after`` times."""
        # Only a connection lost while this entry was in flight counts: each connection
        # was proven good by the broker's PUBACK for ``online`` just before, so losing it
        # again and again with this entry in flight points at the entry. A missing PUBACK
        # points at the network (the link reconnects) and is retried without counting.
        attempts = self._failures.get(entry.seq, 0) + receipt.lost
        cause = receipt.undeliverable
        if not cause and attempts >= self.poison_after:
            cause = f"failed {attempts} times in a row ({receipt.failed})"
        if not cause:
            if attempts:
                self._failures[entry.seq] = attempts
            return self.retry_delay
        self._failures.pop(entry.seq, None)
        self._poisoned += 1
        logger.error(
            "set aside #%d id=%s %s (%d bytes): %s. Never sent; kept in the outbox's set_aside"
            " table for inspection; the messages behind it go on",
            entry.seq, entry.id, entry.message.topic, len(entry.message.payload), cause,
        )  # fmt: skip
        try:
            self.outbox.set_aside(entry.seq, cause)
        except sqlite3.Error as err:
            self._done[entry.seq] = "set aside"
            self._disk(err)
        return 0.0

    def _watch_progress(self, waiting: bool, clock: float) -> None:
        if not waiting:
            self._stalled_since = None
        elif self._stalled_since is None:
            self._stalled_since = clock
            self._stalled_connects = self.link.connects

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
