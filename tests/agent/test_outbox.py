"""The outbox on real SQLite files: order, acks, bounds, expiry, reopening, bad files."""

from __future__ import annotations

import logging
import math
import os
import re
import sqlite3
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from agent.actions import Message
from agent.errors import UsageError
from agent.outbox import MAX_SET_ASIDE, SCHEMA_VERSION, Outbox, OutboxError, OutboxSettings

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_800_000_000.0  # a fixed wall-clock time; every test passes ``now`` explicitly


def light(n: int) -> Message:
    return Message(f"zigbee2mqtt/light_{n}/set", b'{"state":"ON"}')


@pytest.fixture(autouse=True)
def _outbox_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.outbox")


def open_outbox(tmp_path: Path, **bounds: float | None) -> Outbox:
    return Outbox(OutboxSettings(tmp_path / "state" / "outbox.sqlite", **bounds))  # type: ignore[arg-type]


def drop_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "outbox dropped" in r.getMessage()]


def test_entries_come_back_in_order_and_leave_on_ack(tmp_path: Path) -> None:
    with open_outbox(tmp_path) as outbox:
        entries = [outbox.put(light(n), T0 + n) for n in range(3)]
        assert [e.seq for e in entries] == sorted(e.seq for e in entries)
        assert len({e.id for e in entries}) == 3
        assert all(re.fullmatch(r"[0-9a-f]{32}", e.id) for e in entries)
        assert outbox.depth == 3
        assert outbox.size == 3 * (len(light(0).topic) + len(light(0).payload))
        assert outbox.peek(10) == entries
        assert outbox.peek(1) == entries[:1]
        assert outbox.ack(entries[1].seq)
        assert not outbox.ack(entries[1].seq)  # acked twice: nothing left to remove
        assert outbox.peek(10) == [entries[0], entries[2]]
        assert outbox.ack(entries[0].seq) and outbox.ack(entries[2].seq)
        assert outbox.peek(10) == [] and outbox.depth == 0 and outbox.size == 0


def test_the_caller_can_give_the_id_and_an_id_is_never_queued_twice(tmp_path: Path) -> None:
    with open_outbox(tmp_path) as outbox:
        entry = outbox.put(light(1), T0, id="hermes-4711")
        assert entry.id == "hermes-4711"
        with pytest.raises(ValueError, match="already in the outbox"):
            outbox.put(light(2), T0, id="hermes-4711")
        assert outbox.depth == 1


@pytest.mark.parametrize(
    "message",
    [
        Message("zigbee2mqtt/+/set", b"x"),
        Message("home/#", b"x"),
        Message("", b"x"),
        Message("a/b", b"x", qos=3),
        Message("a/b", bytes(998)),  # 1001 bytes with its topic; 1000 is fine (below)
    ],
)
def test_a_message_that_could_never_be_published_is_refused(
    tmp_path: Path, message: Message
) -> None:
    with open_outbox(tmp_path, max_bytes=1000) as outbox:
        with pytest.raises(ValueError):
            outbox.put(message, T0)
        assert outbox.depth == 0
        outbox.put(Message("a/b", bytes(997)), T0)


def test_reopening_keeps_pending_entries_and_seq_never_goes_back(tmp_path: Path) -> None:
    outbox = open_outbox(tmp_path)
    first = outbox.put(light(1), T0)
    second = outbox.put(Message("hermes/intent/TurnOn", "ünïcode".encode(), 0, True), T0 + 1)
    outbox.close()
    with open_outbox(tmp_path) as again:
        assert again.peek(5) == [first, second]  # seq, id, created, topic, payload, qos, retain
        assert again.depth == 2
        assert again.ack(first.seq) and again.ack(second.seq)
    with open_outbox(tmp_path) as third:
        assert third.depth == 0
        assert third.put(light(3), T0 + 2).seq > second.seq  # after emptying, too


def test_expired_commands_are_dropped_and_logged_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_outbox(tmp_path, expire_after=60.0) as outbox:
        command = outbox.put(light(1), T0)
        keep = outbox.put(light(2), T0, expire_after=math.inf)  # e.g. a Hermes intent log
        assert outbox.prune(T0 + 59.9) == []
        assert not command.expired(T0 + 59.9) and command.expired(T0 + 60)
        dropped = outbox.prune(T0 + 60.5)
        assert [(d.entry, d.reason) for d in dropped] == [(command, "expired")]
        assert outbox.peek(5) == [keep]
    [line] = drop_lines(caplog)
    assert f"#{command.seq} id={command.id} zigbee2mqtt/light_1/set: expired" in line
    assert "60.5 s old, expire_after 60 s" in line


def test_a_clock_that_moved_back_further_than_expire_after_expires_commands(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A Pi without a real-time clock can boot with a time from before the command.
    with open_outbox(tmp_path, expire_after=60.0) as outbox:
        small_step = outbox.put(light(1), T0 + 10)
        lost = outbox.put(light(2), T0 + 3600)
        dropped = outbox.prune(T0)
        assert [(d.entry, d.reason) for d in dropped] == [(lost, "expired")]
        assert outbox.peek(5) == [small_step]
    [line] = drop_lines(caplog)
    assert "the clock moved back, its age is unknown" in line


def test_entries_older_than_max_age_are_dropped_even_without_expiry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_outbox(tmp_path, max_age=3600.0, expire_after=None) as outbox:
        old = outbox.put(light(1), T0)
        young = outbox.put(light(2), T0 + 1800)
        assert outbox.prune(T0 + 3599) == []
        dropped = outbox.prune(T0 + 3600)
        assert [(d.entry, d.reason) for d in dropped] == [(old, "over max_age")]
        assert outbox.peek(5) == [young]
    [line] = drop_lines(caplog)
    assert f"id={old.id}" in line and "over max_age (3600 s old, max_age 3600 s)" in line


def test_beyond_max_messages_the_oldest_are_dropped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with open_outbox(tmp_path, max_messages=3) as outbox:
        entries = [outbox.put(light(n), T0) for n in range(5)]
        dropped = outbox.prune(T0 + 1)
        assert [(d.entry, d.reason) for d in dropped] == [
            (entries[0], "over max_messages"),
            (entries[1], "over max_messages"),
        ]
        assert outbox.peek(10) == entries[2:] and outbox.depth == 3
        assert outbox.prune(T0 + 1) == []
    lines = drop_lines(caplog)
    assert len(lines) == 2
    assert "over max_messages (5 waiting, max_messages 3)" in lines[0]
    assert f"id={entries[1].id}" in lines[1]


def test_beyond_max_bytes_the_oldest_are_dropped_until_it_fits(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    size = len("t/0") + 100
    with open_outbox(tmp_path, max_bytes=3 * size + 10) as outbox:
        entries = [outbox.put(Message(f"t/{n}", bytes(100)), T0) for n in range(5)]
        assert entries[0].size == size
        dropped = outbox.prune(T0)
        assert [(d.entry, d.reason) for d in dropped] == [
            (entries[0], "over max_bytes"),
            (entries[1], "over max_bytes"),
        ]
        assert outbox.size == 3 * size <= outbox.settings.max_bytes
    lines = drop_lines(caplog)
    assert len(lines) == 2 and f"over max_bytes ({5 * size} bytes waiting" in lines[0]


def test_each_entry_is_dropped_once_with_the_first_reason_that_applies(tmp_path: Path) -> None:
    with open_outbox(tmp_path, max_messages=2, max_age=100.0, expire_after=10.0) as outbox:
        expired = outbox.put(light(1), T0)
        aged = outbox.put(light(2), T0, expire_after=math.inf)
        fresh = [outbox.put(light(n), T0 + 99, expire_after=math.inf) for n in range(3, 6)]
        dropped = outbox.prune(T0 + 100)
        assert [(d.entry, d.reason) for d in dropped] == [
            (expired, "expired"),
            (aged, "over max_age"),
            (fresh[0], "over max_messages"),
        ]
        assert outbox.peek(10) == fresh[1:]


def test_a_writer_and_a_reader_thread_share_one_outbox(tmp_path: Path) -> None:
    count = 100
    errors: list[BaseException] = []
    with open_outbox(tmp_path) as outbox:

        def write() -> None:
            try:
                for n in range(count):
                    outbox.put(Message("t/n", str(n).encode()), T0)
            except BaseException as err:
                errors.append(err)

        writer = threading.Thread(target=write)
        writer.start()
        seen: list[int] = []
        while len(seen) < count and not errors:
            for entry in outbox.peek(1):
                seen.append(int(entry.message.payload))
                assert outbox.ack(entry.seq)
        writer.join()
        assert not errors
        assert seen == list(range(count))
        assert outbox.depth == 0


# -- files the outbox cannot use ------------------------------------------------------------


def assert_one_line(err: pytest.ExceptionInfo[OutboxError], path: Path, text: str) -> None:
    message = str(err.value)
    assert isinstance(err.value, UsageError)
    assert "\n" not in message
    assert str(path) in message and text in message


def test_a_file_that_is_not_a_database_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    path.write_text("these are not the bytes you are looking for\n" * 100)
    with pytest.raises(OutboxError) as err:
        Outbox(OutboxSettings(path))
    assert_one_line(err, path, "is not a readable SQLite database")


def test_a_corrupted_outbox_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    with Outbox(OutboxSettings(path)) as outbox:
        for n in range(40):
            outbox.put(Message("t/n", bytes(1000) + str(n).encode()), T0)
    with path.open("r+b") as raw:  # keep the header (page 1), scribble over the table's pages
        raw.seek(4096)
        raw.write(b"\xa5" * 8192)
    with pytest.raises(OutboxError) as err:
        Outbox(OutboxSettings(path))
    assert_one_line(err, path, "malformed")


def test_a_directory_in_place_of_the_file_is_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    path.mkdir()
    with pytest.raises(OutboxError) as err:
        Outbox(OutboxSettings(path))
    assert_one_line(err, path, "cannot be used: unable to open database file")


def test_an_outbox_from_a_newer_agent_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    Outbox(OutboxSettings(path)).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(OutboxError) as err:
        Outbox(OutboxSettings(path))
    assert_one_line(err, path, f"schema version {SCHEMA_VERSION + 1}, newer than this agent's")


def test_some_other_sqlite_database_is_refused_and_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text)")
    db.close()
    with pytest.raises(OutboxError) as err:
        Outbox(OutboxSettings(path))
    assert_one_line(err, path, "is an SQLite database but not an outbox")
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT name FROM sqlite_schema").fetchall() == [("notes",)]
    db.close()


HOLDER = """
import sys, time
from agent.outbox import Outbox, OutboxSettings
outbox = Outbox(OutboxSettings(sys.argv[1]))
print("open", flush=True)
time.sleep(60)
"""


def test_a_second_process_on_the_same_outbox_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(OutboxError) as err:
            Outbox(OutboxSettings(path))
        assert_one_line(err, path, "in use by another process")
    finally:
        holder.kill()
        holder.wait()
    Outbox(OutboxSettings(path)).close()  # the lock died with the process


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError):
        OutboxSettings(Path("x"), max_messages=0)
    with pytest.raises(ValueError):
        OutboxSettings(Path("x"), max_bytes=0)
    with pytest.raises(ValueError):
        OutboxSettings(Path("x"), max_age=math.inf)
    with pytest.raises(ValueError):
        OutboxSettings(Path("x"), max_age=60, expire_after=120)
    assert OutboxSettings("relative/outbox.sqlite").path == Path("relative/outbox.sqlite")  # type: ignore[arg-type]


def test_a_new_outbox_is_readable_by_its_owner_only(tmp_path: Path) -> None:
    # It holds transcripts; outside systemd's UMask=0077 the umask may be 022.
    old = os.umask(0o022)
    try:
        with open_outbox(tmp_path) as outbox:
            outbox.put(light(1), T0)
            path = outbox.settings.path
    finally:
        os.umask(old)
    for file in path.parent.iterdir():
        assert stat.S_IMODE(file.stat().st_mode) == 0o600, file.name


V1_SCHEMA = (
    """CREATE TABLE outbox (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, created REAL NOT NULL,
        expire_after REAL, topic TEXT NOT NULL, payload BLOB NOT NULL, qos INTEGER NOT NULL,
        retain INTEGER NOT NULL, size INTEGER NOT NULL
    )""",
    "CREATE INDEX outbox_created ON outbox (created)",
    "INSERT INTO outbox (id, created, expire_after, topic, payload, qos, retain, size)"
    " VALUES ('waiting', 1800000000.0, NULL, 'zigbee2mqtt/light_1/set', X'4f4e', 1, 0, 25)",
    "PRAGMA user_version = 1",
)


def test_an_outbox_of_the_previous_version_is_upgraded_and_keeps_its_messages(
    tmp_path: Path,
) -> None:
    path = tmp_path / "outbox.sqlite"
    with sqlite3.connect(path) as db:
        for statement in V1_SCHEMA:
            db.execute(statement)
    db.close()
    with Outbox(OutboxSettings(path, expire_after=None)) as outbox:
        [entry] = outbox.peek(10)
        assert (entry.id, entry.message.payload) == ("waiting", b"ON")
        assert outbox.held == 0
        assert outbox.set_aside(entry.seq, "over the broker's maximum packet size", T0)
        assert outbox.depth == 0 and outbox.held == 1
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 2
    db.close()
    with Outbox(OutboxSettings(path)) as outbox:  # reopened: still set aside, not queued
        assert outbox.peek(10) == [] and outbox.held == 1
        [(kept, cause)] = outbox.set_aside_entries()
        assert (kept.id, kept.message.topic, cause) == (
            "waiting", "zigbee2mqtt/light_1/set", "over the broker's maximum packet size"
        )  # fmt: skip


def test_set_aside_keeps_only_the_newest(tmp_path: Path) -> None:
    with open_outbox(tmp_path) as outbox:
        entries = [outbox.put(light(n), T0) for n in range(MAX_SET_ASIDE + 5)]
        for entry in entries:
            assert outbox.set_aside(entry.seq, "test", T0)
        assert not outbox.set_aside(entries[0].seq, "test", T0)  # not queued any more
        assert outbox.held == MAX_SET_ASIDE and outbox.depth == 0
        kept = [entry.seq for entry, _ in outbox.set_aside_entries()]
        assert kept == [entry.seq for entry in entries[5:]]
