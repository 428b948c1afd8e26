"""The courier against a real mosquitto and a real outbox file: order, expiry, kill -9, outages."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.actions import Message
from agent.delivery import Courier
from agent.mqtt import MqttLink, MqttSettings
from agent.outbox import Outbox, OutboxSettings
from tests.agent.broker import (  # noqa: F401
    ACL_DENIED,
    HOST,
    USERNAME,
    Mosquitto,
    Subscriber,
    acl_broker,
    broker,
    free_port,
)

ROOT = Path(__file__).resolve().parents[2]
FAST = {"reconnect_min": 0.1, "reconnect_max": 0.5}


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent")


class Clock:
    """A wall clock the test moves by hand, so that ages need no sleeping."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Running:
    """A link and a courier over one outbox, stopped in the daemon's order."""

    def __init__(self, outbox: Outbox, port: int, site_id: str, **courier: float) -> None:
        self.outbox = outbox
        self.link = MqttLink(MqttSettings(HOST, port, site_id=site_id, **FAST))
        self.courier = Courier(outbox, self.link, **{"retry_delay": 0.1, **courier})

    def __enter__(self) -> Courier:
        self.link.start()
        self.courier.start()
        return self.courier

    def __exit__(self, *exc: object) -> None:
        self.courier.stop()
        self.link.stop()
        self.outbox.close()


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(OutboxSettings(tmp_path / "outbox.sqlite"))
    yield box
    box.close()


def test_submitted_messages_are_delivered_in_order_and_acked(
    broker: Mosquitto,  # noqa: F811
    outbox: Outbox,
) -> None:
    with Subscriber(broker.port, "order/#") as sub, Running(outbox, broker.port, "order") as c:
        entries = [c.submit(Message(f"order/light_{n % 3}", str(n).encode())) for n in range(30)]
        got = [sub.get(5) for _ in entries]
        assert [m.payload for m in got] == [e.message.payload for e in entries]
        assert [m.topic for m in got] == [e.message.topic for e in entries]
        assert c.wait_drained(5)
        assert outbox.depth == 0 and c.sent == 30


def test_publish_queues_for_the_daemon_and_refuses_what_could_never_be_sent(
    broker: Mosquitto,  # noqa: F811
    outbox: Outbox,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with Subscriber(broker.port, "daemon/#") as sub, Running(outbox, broker.port, "daemon") as c:
        assert c.publish(Message("daemon/light/set", b"ON"))
        assert not c.publish(Message("daemon/+/set", b"ON"))
        assert sub.get(5).payload == b"ON"
        assert c.wait_drained(5) and c.sent == 1
    assert "not queued for daemon/+/set: topic 'daemon/+/set' has a wildcard" in caplog.text


def test_an_expired_command_is_dropped_and_logged_not_replayed(
    broker: Mosquitto,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(1_800_000_000.0)
    outbox = Outbox(OutboxSettings(tmp_path / "outbox.sqlite", expire_after=60.0), clock)
    stale = outbox.put(Message("expiry/kitchen_light/set", b"ON"))
    clock.now += 61  # the broker was away for a minute
    fresh = outbox.put(Message("expiry/hall_light/set", b"ON"))
    with Subscriber(broker.port, "expiry/#") as sub, Running(outbox, broker.port, "expiry") as c:
        assert sub.get(5).topic == fresh.message.topic
        assert c.wait_drained(5)
        with pytest.raises(AssertionError):
            sub.get(0.5)  # the stale command never arrives
    line = next(r.getMessage() for r in caplog.records if "outbox dropped" in r.getMessage())
    assert f"id={stale.id} expiry/kitchen_light/set: expired (61.0 s old" in line
    assert f"id={fresh.id}" in caplog.text  # the delivery line names the id too


def test_a_broker_that_is_down_keeps_entries_queued_and_stop_is_prompt(
    tmp_path: Path,
) -> None:
    outbox = Outbox(OutboxSettings(tmp_path / "outbox.sqlite"))
    port = free_port()
    running = Running(outbox, port, "down")
    courier = running.__enter__()
    try:
        entries = [courier.submit(Message("down/x", str(n).encode())) for n in range(3)]
        assert not courier.wait_drained(0.5)
        started = time.monotonic()
        courier.stop()
        assert time.monotonic() - started < 1.0 and not courier.running
        assert outbox.peek(5) == entries
        assert courier.sent == 0
    finally:
        running.__exit__()


CHILD = """
import sys, time
from agent.actions import Message
from agent.delivery import Courier
from agent.mqtt import MqttLink, MqttSettings
from agent.outbox import Outbox, OutboxSettings

outbox = Outbox(OutboxSettings(sys.argv[1], expire_after=None))
link = MqttLink(MqttSettings("127.0.0.1", int(sys.argv[2]), site_id="doomed", reconnect_min=0.1,
                             reconnect_max=0.5))
link.start()
courier = Courier(outbox, link, retry_delay=0.1)
courier.start()
for n in range(50):
    print(courier.submit(Message(f"kill9/light_{n % 5}/set", str(n).encode())).id, flush=True)
print("ready", flush=True)
time.sleep(60)
"""


def test_after_kill_9_with_the_broker_down_all_50_go_out_in_order(
    broker: Mosquitto,  # noqa: F811
    tmp_path: Path,
) -> None:
    path = tmp_path / "state" / "outbox.sqlite"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path), str(free_port())],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        ids = [child.stdout.readline().strip() for _ in range(50)]
        assert child.stdout.readline().strip() == "ready", ids
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()
    # Killed before any checkpoint: the 50 commits live only in the write-ahead log.
    assert Path(f"{path}-wal").stat().st_size > 0
    outbox = Outbox(OutboxSettings(path, expire_after=None))
    assert [e.id for e in outbox.peek(100)] == ids
    with Subscriber(broker.port, "kill9/#") as sub, Running(outbox, broker.port, "reborn") as c:
        got = [sub.get(5) for _ in range(50)]
        assert [m.payload for m in got] == [str(n).encode() for n in range(50)]
        assert [m.topic for m in got] == [f"kill9/light_{n % 5}/set" for n in range(50)]
        assert c.wait_drained(5)
        with pytest.raises(AssertionError):
            sub.get(0.5)  # nothing twice: the child never reached the broker


def test_200_commands_across_a_broker_restart_arrive_in_order_once_per_id(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    count, outage = 200, 2.0
    restarting = Mosquitto(tmp_path / "broker", persistent=True).start()
    outbox = Outbox(OutboxSettings(tmp_path / "outbox.sqlite"))
    ids = [uuid.uuid4().hex for _ in range(count)]
    # A persistent session: the broker keeps what arrives while the subscriber reconnects.
    sub = Subscriber(restarting.port, "outage/#", client_id="outage-consumer")
    try:
        with Running(outbox, restarting.port, "outage", publish_timeout=2.0) as courier:
            assert courier.link.wait_connected(10)

            def produce() -> None:
                for n, id_ in enumerate(ids):
                    body = json.dumps({"n": n, "id": id_}).encode()
                    courier.submit(Message(f"outage/light_{n % 3}/set", body), id=id_)
                    time.sleep(0.01)

            producer = threading.Thread(target=produce)
            producer.start()
            received = [json.loads(sub.get(5).payload) for _ in range(40)]
            restarting.stop()  # the broker goes away in the middle of the stream
            time.sleep(outage)
            waiting = outbox.depth
            restarting.start()
            deadline = time.monotonic() + 15
            while len({m["n"] for m in received}) < count and time.monotonic() < deadline:
                received.append(json.loads(sub.get(deadline - time.monotonic()).payload))
            producer.join()
            assert courier.wait_drained(5)
    finally:
        sub.close()
        restarting.stop()
    assert waiting > 0  # commands really queued up during the outage
    assert "lost connection to MQTT broker" in caplog.text
    numbers = [m["n"] for m in received]
    # Every command, and in order once repeats are dropped: a repeat is the broker handing
    # the subscriber again what it had in flight to it when it stopped (QoS 1 is
    # at-least-once on that leg too), and it carries the id of its first copy.
    assert list(dict.fromkeys(numbers)) == list(range(count))
    # The courier acked each entry exactly once, in order, and its log names it by the id
    # that consumers see (here, as Hermes does, in the payload).
    delivered = re.findall(r"delivered #\d+ id=(\w+) ", caplog.text)
    assert delivered == ids
    duplicates = len(numbers) - count
    print(f"{count} delivered, {duplicates} duplicate(s), {waiting} waited out the outage")


def test_a_refused_message_is_logged_kept_retried_and_does_not_block_the_rest(
    acl_broker: Mosquitto,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock(1_800_000_000.0)
    outbox = Outbox(OutboxSettings(tmp_path / "outbox.sqlite", expire_after=60.0), clock)
    settings = MqttSettings(HOST, acl_broker.port, username=USERNAME, site_id="acl", **FAST)
    link = MqttLink(settings)
    courier = Courier(outbox, link, retry_delay=0.1, refused_max=0.2, prune_interval=0.1)
    link.start()
    courier.start()
    try:
        with Subscriber(acl_broker.port, ("zigbee2mqtt/#", "acl/#"), mqtt5=True) as sub:
            assert link.wait_connected(10)
            refused = courier.submit(Message(ACL_DENIED, b'{"state":"ON"}'))
            behind = [courier.submit(Message("acl/allowed/x", str(n).encode())) for n in range(3)]
            got = [sub.get(5) for _ in behind]  # set aside, not blocking: the rest flow
            assert [m.payload for m in got] == [b"0", b"1", b"2"]
            assert [Subscriber.user_properties(m)["id"] for m in got] == [e.id for e in behind]
            time.sleep(0.8)  # several retries, all refused again
            assert [e.id for e in outbox.peek(10)] == [refused.id]
            assert courier.refused == 1 and courier.sent == 3
            started = time.monotonic()
            assert not courier.wait_drained(5)  # at once: only a refused message is left
            assert time.monotonic() - started < 1
            clock.now += 61  # it expires by the outbox's rules, and the outbox says so
            deadline = time.monotonic() + 5
            # Both: the courier thread forgets the entry just after the prune's commit,
            # so the test thread can see the outbox empty while the count still holds it.
            while (outbox.depth or courier.refused) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert outbox.depth == 0 and courier.refused == 0
            with pytest.raises(AssertionError):
                sub.wait_for(ACL_DENIED, timeout=0.2)
    finally:
        courier.stop()
        link.stop()
        outbox.close()
    lines = [r for r in caplog.records if "refused" in r.getMessage()]
    errors = [r.getMessage() for r in lines if r.levelno == logging.ERROR]
    assert errors == [
        f"broker {settings.address} refused #{refused.seq} id={refused.id} {ACL_DENIED}:"
        f" Not authorized (0x87); check the broker's ACL for {USERNAME}. Kept in the"
        f" outbox, retrying (next in {errors[0].split('next in ')[1]}"
    ]
    assert sum(r.levelno == logging.DEBUG for r in lines) >= 2  # the retries, quietly
    assert f"outbox dropped #{refused.seq} id={refused.id} {ACL_DENIED}: expired" in caplog.text
