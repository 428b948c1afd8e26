"""The durable outbox: every action is on disk before it is published and leaves on PUBACK.

One SQLite file in WAL mode under the service's state directory. ``put`` commits a message
(fsynced, so it survives kill -9 and power loss), ``peek`` returns the oldest in order,
``ack`` removes one once the broker acknowledged it, and ``prune`` enforces the bounds
(count, bytes, age) and expires commands too old to mean anything any more, logging one
line per dropped message. The :class:`agent.delivery.Courier` is the one that drains it.

Threading: one ``Outbox`` per file per process. Every method takes one lock, so any thread
may call any method (the daemon has two: the audio thread puts, the courier thread peeks,
acks and prunes). The file is locked exclusively (``locking_mode=EXCLUSIVE``), so a second
agent on the same file gets a clear error instead of delivering everything twice.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from agent.actions import Message
from agent.errors import UsageError

logger = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 2
"""``PRAGMA user_version`` of the file this code writes; a newer file is refused."""

# synchronous=FULL: in WAL mode SQLite then fsyncs the WAL on every commit, so a put that
# returned is on the disk. NORMAL syncs only at checkpoints: the file stays consistent but
# the last commits can roll back after a power loss, i.e. a command the user just spoke
# could vanish. One fsync per utterance (its messages are one transaction) is nothing at
# speaking rate. Acks alone run at NORMAL: losing one to a power cut means a repeat, with
# the same id, never a loss.
_PRAGMAS: Final = (
    "PRAGMA synchronous = FULL",
    # After a long outage the WAL may have grown; keep at most 1 MiB of it on the SD card.
    "PRAGMA journal_size_limit = 1048576",
)

_SCHEMA: Final = (
    # AUTOINCREMENT: seq never goes back, even after the outbox was emptied, so log lines
    # from different days never show two messages with the same number.
    """CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        created REAL NOT NULL,
        expire_after REAL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        size INTEGER NOT NULL
    )""",
    "CREATE INDEX outbox_created ON outbox (created)",
)

# Version 2: messages the courier set aside because they could not be delivered (the broker
# dropped the connection on each try, or they are over its maximum packet size), kept for
# inspection (sqlite3 outbox.sqlite 'SELECT * FROM set_aside') instead of blocking the rest.
_SET_ASIDE: Final = (
    """CREATE TABLE set_aside (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL,
        created REAL NOT NULL,
        topic TEXT NOT NULL,
        payload BLOB NOT NULL,
        qos INTEGER NOT NULL,
        retain INTEGER NOT NULL,
        cause TEXT NOT NULL,
        set_aside REAL NOT NULL
    )""",
)
MAX_SET_ASIDE: Final = 100
"""Set-aside messages kept; beyond, the oldest go (they are for inspection, not delivery)."""

_COLUMNS: Final = "seq, id, created, expire_after, topic, payload, qos, retain"
_MAX_TOPIC_BYTES: Final = 65535

DropReason = Literal["expired", "over max_messages", "over max_bytes", "over max_age"]


class OutboxError(UsageError):
    """The outbox file cannot be used; ``str()`` is one line naming the file."""


class DiskFull(ValueError):
    """Nothing new is stored: the outbox's filesystem is below ``min_free`` (or full)."""


def _rollback(db: sqlite3.Connection) -> None:
    # SQLite rolls a transaction back by itself on SQLITE_FULL and some I/O errors; a
    # ROLLBACK then fails with "cannot rollback - no transaction is active", which would
    # replace the real cause (the disk is full) in the log.
    if db.in_transaction:
        db.execute("ROLLBACK")


@dataclass(frozen=True)
class OutboxSettings:
    """Where the outbox lives and how much of what age it keeps."""

    path: Path
    max_messages: int = 1000
    max_bytes: int = 1_000_000
    """Sum of topic (UTF-8) and payload bytes of the pending messages."""
    max_age: float = 86_400.0
    """Seconds; anything older is dropped, whatever it is."""
    expire_after: float | None = 60.0
    """Seconds after which a command means nothing any more ("turn on the light" an hour
    late is wrong); None: only ``max_age`` applies. ``put`` can override it per message."""
    min_free: int = 1_048_576
    """Bytes that must stay free on the outbox's filesystem for a new utterance to be
    stored: below it, ``put`` refuses with one clear line, so that the acks (deletes, which
    also need a little room in SQLite's log) keep working and delivery never stalls on a
    full disk."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        if self.max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        if not 0 < self.max_age < math.inf:
            raise ValueError("max_age must be a positive number of seconds")
        if self.expire_after is not None and not 0 < self.expire_after <= self.max_age:
            raise ValueError("expire_after must be positive and at most max_age")
        if self.min_free < 0:
            raise ValueError("min_free must not be negative")


@dataclass(frozen=True)
class Entry:
    """One pending message: ``seq`` orders them, ``id`` names it for consumers (stable
    across resends and restarts), ``created`` is wall-clock seconds."""

    seq: int
    id: str
    created: float
    message: Message
    expire_after: float | None = None
    """Seconds after ``created`` when the message is expired; None: never."""

    @property
    def size(self) -> int:
        """What the entry counts against ``max_bytes``."""
        return _size(self.message)

    def expired(self, now: float) -> bool:
        """True when the entry has an expiry and its age is unknown or beyond it.

        The age counts both ways: a clock that moved back by more than ``expire_after``
        (a Pi without a real-time clock boots with a stale time) means the true age is
        unknown, and an unknown age must not turn the light on.
        """
        return self.expire_after is not None and abs(now - self.created) >= self.expire_after


@dataclass(frozen=True)
class Dropped:
    """An entry ``prune`` removed without sending it, and why."""

    entry: Entry
    reason: DropReason
    detail: str
    """The numbers behind the reason, for the log line."""


def _size(message: Message) -> int:
    return len(message.topic.encode("utf-8")) + len(message.payload)


def _check_message(message: Message) -> None:
    # Refused here rather than by paho at publish time: a message that can never be sent
    # would otherwise block everything queued behind it until it ages out.
    topic = message.topic.encode("utf-8")
    if not topic or len(topic) > _MAX_TOPIC_BYTES:
        raise ValueError(f"topic must be 1 to {_MAX_TOPIC_BYTES} bytes: {message.topic!r}")
    if any(c in message.topic for c in "+#\x00"):
        raise ValueError(f"topic {message.topic!r} has a wildcard or NUL")
    if message.qos not in (0, 1, 2):
        raise ValueError(f"qos must be 0, 1 or 2, not {message.qos}")


def _entry(row: tuple) -> Entry:
    seq, id_, created, expire_after, topic, payload, qos, retain = row
    return Entry(seq, id_, created, Message(topic, bytes(payload), qos, bool(retain)), expire_after)


def _explain(err: sqlite3.Error) -> str:
    text = str(err)
    if "locked" in text:
        return "is in use by another process (is a second voice-agent running?)"
    if "not a database" in text or "malformed" in text:
        return f"is not a readable SQLite database ({text}); move it away to start empty"
    return f"cannot be used: {text}"


class Outbox:
    """Messages waiting for the broker's acknowledgement, in order, on disk."""

    def __init__(self, settings: OutboxSettings, clock: Callable[[], float] = time.time) -> None:
        """Open (or create) the outbox file; :class:`OutboxError` if it is unusable."""
        self.settings = settings
        self.clock = clock
        self._lock = threading.Lock()
        path = settings.path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise OutboxError(f"outbox {path}: cannot create its directory: {err}") from None
        try:
            # The outbox holds transcripts: only its owner may read it, whatever the umask
            # (SQLite gives the -wal and -shm files the main file's mode).
            os.close(os.open(path, os.O_RDONLY | os.O_CREAT, 0o600))
        except IsADirectoryError:
            pass  # refused below, with the other unusable files
        except OSError as err:
            raise OutboxError(f"outbox {path}: cannot create: {err.strerror or err}") from None
        try:
            self._db = self._open(path)
        except sqlite3.Error as err:
            raise OutboxError(f"outbox {path} {_explain(err)}") from None
        self._count, self._bytes = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox"
        ).fetchone()
        self._held = self._db.execute("SELECT COUNT(*) FROM set_aside").fetchone()[0]
        if self._held:
            logger.warning(
                "outbox %s: %d message(s) set aside as undeliverable (see the set_aside table)",
                path, self._held,
            )  # fmt: skip
        if self._count:
            logger.info("outbox %s: %d message(s) waiting from before", path, self._count)

    @staticmethod
    def _open(path: Path) -> sqlite3.Connection:
        # isolation_level=None: no implicit transactions; each put/ack is one commit.
        # timeout: a previous instance that systemd is still stopping may hold the lock.
        db = sqlite3.connect(path, timeout=2.0, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA locking_mode = EXCLUSIVE")
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise sqlite3.OperationalError(f"cannot switch to WAL mode (got {mode})")
            for pragma in _PRAGMAS:
                db.execute(pragma)
            db.execute("BEGIN IMMEDIATE")  # holds the exclusive lock from now until close
            try:
                _ensure_schema(db, path)
                db.execute("COMMIT")
            except BaseException:
                _rollback(db)
                raise
            problem = db.execute("PRAGMA quick_check").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed: {problem}")
        except BaseException:
            db.close()
            raise
        return db

    def __repr__(self) -> str:
        return f"Outbox({str(self.settings.path)!r}, depth={self._count})"

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def depth(self) -> int:
        """How many messages wait for an acknowledgement."""
        return self._count

    @property
    def size(self) -> int:
        """Bytes the waiting messages count against ``max_bytes``."""
        return self._bytes

    @property
    def held(self) -> int:
        """Messages set aside as undeliverable (kept for inspection, never sent)."""
        return self._held

    def free_bytes(self) -> int:
        """Bytes free for this user on the outbox's filesystem."""
        info = os.statvfs(self.settings.path.parent)
        return info.f_bavail * info.f_frsize

    def low_on_space(self) -> str:
        """Why nothing new can be stored (one phrase), or "" while there is room."""
        floor = self.settings.min_free
        if not floor:
            return ""
        try:
            free = self.free_bytes()
        except OSError as err:
            return f"cannot tell the free space of {self.settings.path.parent}: {err}"
        if free >= floor:
            return ""
        return (
            f"only {free // 1024} KiB free on {self.settings.path.parent}, below the"
            f" {floor // 1024} KiB the outbox keeps free; free some space"
        )

    def put(
        self,
        message: Message,
        now: float | None = None,
        *,
        id: str | None = None,  # shadows the builtin: the Hermes field is called id
        expire_after: float | None = None,
    ) -> Entry:
        """Store ``message`` durably (fsynced before this returns) and return its entry.

        ``id``: the message's stable id, unique among the waiting ones (None: a fresh
        uuid4 hex); consumers drop a repeat of an id they have seen. ``expire_after``:
        seconds, None for the settings' value, ``math.inf`` for never (``max_age`` still
        applies).
        ValueError for a message that could never be published or kept (a wildcard in the
        topic, bigger than ``max_bytes``) or an id already queued; sqlite3.Error when the
        disk fails (full, I/O error), and then nothing was stored.
        """
        return self.put_many((message,), now, ids=(id,), expire_after=expire_after)[0]

    def put_many(
        self,
        messages: Sequence[Message],
        now: float | None = None,
        *,
        ids: Sequence[str | None] | None = None,
        expire_after: float | None = None,
    ) -> list[Entry]:
        """Store ``messages`` in one transaction: all or none, one fsync for the lot (the
        messages of one utterance), in order. Arguments and errors as :meth:`put`."""
        created = self.clock() if now is None else now
        if expire_after is None:
            expire_after = self.settings.expire_after
        elif expire_after <= 0:
            raise ValueError("expire_after must be positive")
        stored_expiry = None if expire_after is None or math.isinf(expire_after) else expire_after
        if ids is None:
            ids = [None] * len(messages)
        low = self.low_on_space()
        if low:
            raise DiskFull(low)
        rows = []
        for message, id_ in zip(messages, ids, strict=True):
            _check_message(message)
            size = _size(message)
            if size > self.settings.max_bytes:
                # It would be dropped at once, after pushing out everything queued before it.
                raise ValueError(f"message of {size} bytes is over max_bytes")
            rows.append((id_ if id_ is not None else uuid.uuid4().hex, message, size))
        entries = []
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for id_, message, size in rows:
                    try:
                        seq = self._db.execute(
                            "INSERT INTO outbox (id, created, expire_after, topic, payload, qos,"
                            " retain, size) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING seq",
                            (id_, created, stored_expiry, message.topic, message.payload,
                             message.qos, int(message.retain), size),
                        ).fetchone()[0]  # fmt: skip
                    except sqlite3.IntegrityError:
                        raise ValueError(f"id {id_!r} is already in the outbox") from None
                    entries.append(Entry(seq, id_, created, message, stored_expiry))
                self._db.execute("COMMIT")
            except BaseException:
                _rollback(self._db)
                raise
            self._count += len(rows)
            self._bytes += sum(size for _, _, size in rows)
        if logger.isEnabledFor(logging.DEBUG):
            for entry in entries:
                logger.debug("outbox #%d id=%s %s queued", entry.seq, entry.id, entry.message.topic)
        return entries

    def peek(self, limit: int = 1) -> list[Entry]:
        """The oldest ``limit`` entries, oldest first; they stay until acked or pruned."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_COLUMNS} FROM outbox ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [_entry(row) for row in rows]

    def ack(self, seq: int) -> bool:
        """Remove entry ``seq`` (the broker has it); False if it was not there any more.

        sqlite3.Error when the disk refuses the delete (full, read-only): the caller must
        then remember that ``seq`` was delivered, and not send it again."""
        with self._lock:
            # Not fsynced: if power fails before the next put syncs the log, the message is
            # sent again after the restart, with the same id (at least once, never lost).
            self._db.execute("PRAGMA synchronous = NORMAL")
            try:
                row = self._db.execute(
                    "DELETE FROM outbox WHERE seq = ? RETURNING size", (seq,)
                ).fetchone()
            finally:
                self._db.execute("PRAGMA synchronous = FULL")
            if row is None:
                return False
            self._count -= 1
            self._bytes -= row[0]
        return True

    def prune(self, now: float | None = None) -> list[Dropped]:
        """Drop what is expired, too old, or beyond the count and byte bounds (oldest first).

        Each dropped message is logged here, one warning line with its id and the reason,
        so that no caller can drop a command silently; the list is for the caller's
        counters and for tests.
        """
        now = self.clock() if now is None else now
        settings = self.settings
        with self._lock:
            dropped: list[Dropped] = []
            self._db.execute("BEGIN IMMEDIATE")
            try:
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE expire_after IS NOT NULL"
                    " AND abs(? - created) >= expire_after ORDER BY seq",
                    (now,),
                ).fetchall()
                for row in rows:
                    entry = _entry(row)
                    dropped.append(Dropped(entry, "expired", _age_text(entry, now)))
                self._delete(dropped)

                first = len(dropped)
                rows = self._db.execute(
                    f"SELECT {_COLUMNS} FROM outbox WHERE created <= ? ORDER BY seq",
                    (now - settings.max_age,),
                ).fetchall()
                for row in rows:
                    entry = _entry(row)
                    age = f"{now - entry.created:.0f} s old, max_age {settings.max_age:g} s"
                    dropped.append(Dropped(entry, "over max_age", age))
                self._delete(dropped[first:])

                first = len(dropped)
                excess = self._count - settings.max_messages
                if excess > 0:
                    rows = self._db.execute(
                        f"SELECT {_COLUMNS} FROM outbox ORDER BY seq LIMIT ?", (excess,)
                    ).fetchall()
                    limit = f"{self._count} waiting, max_messages {settings.max_messages}"
                    dropped += [Dropped(_entry(r), "over max_messages", limit) for r in rows]
                    self._delete(dropped[first:])

                first = len(dropped)
                if self._bytes > settings.max_bytes:
                    limit = f"{self._bytes} bytes waiting, max_bytes {settings.max_bytes}"
                    over = self._bytes - settings.max_bytes
                    cursor = self._db.execute(f"SELECT {_COLUMNS} FROM outbox ORDER BY seq")
                    for row in cursor:
                        entry = _entry(row)
                        dropped.append(Dropped(entry, "over max_bytes", limit))
                        over -= entry.size
                        if over <= 0:
                            break
                    cursor.close()
                    self._delete(dropped[first:])
                self._db.execute("COMMIT")
            except BaseException:
                _rollback(self._db)
                self._count, self._bytes = self._db.execute(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM outbox"
                ).fetchone()
                raise
        for item in dropped:
            entry = item.entry
            logger.warning(
                "outbox dropped #%d id=%s %s: %s (%s)",
                entry.seq, entry.id, entry.message.topic, item.reason, item.detail,
            )  # fmt: skip
        return dropped

    def set_aside(self, seq: int, cause: str, now: float | None = None) -> bool:
        """Move entry ``seq`` out of the queue into the ``set_aside`` table with ``cause``
        (it is never sent; kept for inspection, the oldest beyond ``MAX_SET_ASIDE`` go);
        False if it was not there any more. sqlite3.Error when the disk refuses."""
        now = self.clock() if now is None else now
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                row = self._db.execute(
                    "DELETE FROM outbox WHERE seq = ? RETURNING id, created, topic, payload,"
                    " qos, retain, size",
                    (seq,),
                ).fetchone()
                if row is None:
                    self._db.execute("COMMIT")
                    return False
                id_, created, topic, payload, qos, retain, size = row
                self._db.execute(
                    "INSERT OR REPLACE INTO set_aside (seq, id, created, topic, payload, qos,"
                    " retain, cause, set_aside) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (seq, id_, created, topic, payload, qos, retain, cause, now),
                )
                self._db.execute(
                    "DELETE FROM set_aside WHERE seq NOT IN"
                    " (SELECT seq FROM set_aside ORDER BY seq DESC LIMIT ?)",
                    (MAX_SET_ASIDE,),
                )
                held = self._db.execute("SELECT COUNT(*) FROM set_aside").fetchone()[0]
                self._db.execute("COMMIT")
            except BaseException:
                _rollback(self._db)
                raise
            self._count -= 1
            self._bytes -= size
            self._held = held
        return True

    def set_aside_entries(self) -> list[tuple[Entry, str]]:
        """The set-aside messages, oldest first, each with its cause."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, id, created, NULL, topic, payload, qos, retain, cause"
                " FROM set_aside ORDER BY seq"
            ).fetchall()
        return [(_entry(row[:8]), row[8]) for row in rows]

    def _delete(self, dropped: list[Dropped]) -> None:
        # Inside prune's transaction, under the lock.
        if not dropped:
            return
        self._db.executemany(
            "DELETE FROM outbox WHERE seq = ?", [(item.entry.seq,) for item in dropped]
        )
        self._count -= len(dropped)
        self._bytes -= sum(item.entry.size for item in dropped)

    def close(self) -> None:
        """Close the file (a checkpoint folds the WAL back in); pending entries stay."""
        with self._lock:
            self._db.close()


def _age_text(entry: Entry, now: float) -> str:
    age = now - entry.created
    if age < 0:
        return (
            f"created {-age:.0f} s in the future: the clock moved back, its age is unknown;"
            f" expire_after {entry.expire_after:g} s"
        )
    return f"{age:.1f} s old, expire_after {entry.expire_after:g} s"


def _ensure_schema(db: sqlite3.Connection, path: Path) -> None:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise OutboxError(
            f"outbox {path} has schema version {version}, newer than this agent's "
            f"({SCHEMA_VERSION}); upgrade the agent or move the file away"
        )
    if version == 0:
        tables = db.execute("SELECT COUNT(*) FROM sqlite_schema").fetchone()[0]
        if tables:
            raise OutboxError(f"outbox {path} is an SQLite database but not an outbox")
        for statement in (*_SCHEMA, *_SET_ASIDE):
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        logger.info("outbox %s created", path)
        return
    try:
        db.execute(f"SELECT {_COLUMNS}, size FROM outbox LIMIT 0")
    except sqlite3.OperationalError as err:
        raise OutboxError(f"outbox {path} does not have the outbox table ({err})") from None
    if version == 1:
        for statement in _SET_ASIDE:
            db.execute(statement)
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
