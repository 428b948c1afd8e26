"""Delivery under hostile conditions, against a real mosquitto: a proxy that swallows one
direction or dies mid-flight, a message the broker cannot take, a full filesystem, two
agents on one broker. Each test asserts what arrived, and how many times."""

from __future__ import annotations

import logging
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from agent.actions import Message
from agent.delivery import Courier
from agent.doctor import check_state_directory
from agent.liveness import Liveness
from agent.mqtt import (
    MqttLink,
    MqttSettings,
    Protocol,
    _packet_size,  # checked against mosquitto's own count
    default_site_id,
    machine_tag,
)
from agent.notify import Notifier
from agent.outbox import Outbox, OutboxSettings
from tests.agent.broker import HOST, Mosquitto, Subscriber, broker, wait_until  # noqa: F401
from tests.agent.disk import NoSmallDisk, fill, small_filesystem
from tests.agent.proxy import Proxy

FAST = {"reconnect_min": 0.1, "reconnect_max": 0.3}


@pytest.fixture(autouse=True)
def _logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent")


class Agent:
    """An outbox, a link (through ``port``) and a courier, stopped in the daemon's order."""

    def __init__(
        self, outbox: Outbox, port: int, site_id: str, protocol: Protocol = "5", **courier: float
    ) -> None:
        self.outbox = outbox
        self.link = MqttLink(MqttSettings(HOST, port, site_id=site_id, protocol=protocol, **FAST))
        options = {"retry_delay": 0.1, "publish_timeout": 1.0, **courier}
        self.courier = Courier(outbox, self.link, **options)  # type: ignore[arg-type]

    def __enter__(self) -> Courier:
        self.link.start()
        self.courier.start()
        assert self.link.wait_connected(10)
        return self.courier

    def __exit__(self, *exc: object) -> None:
        self.courier.stop()
        self.link.stop()
        self.outbox.close()


def copies(sub: Subscriber, seconds: float) -> list[tuple[str, bytes, str]]:
    """(topic, payload, id) of everything that arrives within ``seconds``."""
    return [(m.topic, m.payload, Subscriber.user_properties(m)["id"]) for m in sub.drain(seconds)]


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    box = Outbox(OutboxSettings(tmp_path / "outbox.sqlite"))
    yield box
    box.close()


def test_a_swallowed_puback_keeps_the_message_which_is_resent_after_reconnect_once(
    broker: Mosquitto,  # noqa: F811
    outbox: Outbox,
) -> None:
    with (
        Proxy(broker.port) as proxy,
        Subscriber(broker.port, "swallow/#", mqtt5=True) as sub,
        Agent(outbox, proxy.port, "swallow") as courier,
    ):
        proxy.downstream = False  # the broker's PUBACK never reaches the agent
        entry = courier.submit(Message("swallow/light/set", b"ON"))
        first = sub.get(5)  # the broker has it and passed it on
        assert wait_until(lambda: proxy.swallowed > 0)
        proxy.downstream = True
        assert outbox.depth == 1 and courier.sent == 0  # not acknowledged: kept
        # No PUBACK within publish_timeout: the link reconnects and the outbox sends again.
        got = [first, *[sub.get(5)]]
        assert wait_until(lambda: outbox.depth == 0) and courier.sent == 1
        rest = copies(sub, 1.5)
        assert rest == []  # once acknowledged, never again (paho keeps no copy of its own)
        assert [Subscriber.user_properties(m)["id"] for m in got] == [entry.id, entry.id]
        assert proxy.connections == 2


def test_a_link_that_dies_mid_flight_delivers_the_message_exactly_once_after_reconnect(
    broker: Mosquitto,  # noqa: F811
    outbox: Outbox,
) -> None:
    with (
        Proxy(broker.port) as proxy,
        Subscriber(broker.port, "midflight/#", mqtt5=True) as sub,
        Agent(outbox, proxy.port, "midflight", publish_timeout=5.0) as courier,
    ):
        proxy.upstream = False  # the PUBLISH dies on the way
        entry = courier.submit(Message("midflight/light/set", b"ON"))
        assert wait_until(lambda: proxy.discarded > 0)
        proxy.upstream = True
        proxy.cut()  # and then the connection itself
        got = copies(sub, 3.0)
        assert got == [("midflight/light/set", b"ON", entry.id)]  # paho's copy is not resent
        assert outbox.depth == 0 and courier.sent == 1


def test_a_command_that_expires_while_the_link_is_down_is_never_replayed(
    broker: Mosquitto,  # noqa: F811
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    outbox = Outbox(OutboxSettings(tmp_path / "outbox.sqlite", expire_after=2.0))
    with (
        Proxy(broker.port) as proxy,
        Subscriber(broker.port, "late/#", mqtt5=True) as sub,
        Agent(outbox, proxy.port, "late") as courier,
    ):
        proxy.upstream = False  # the agent -> broker leg is cut first ...
        stale = courier.submit(Message("late/kitchen_light/set", b"ON"))
        assert wait_until(lambda: proxy.discarded > 0)
        proxy.accepting = False  # ... then the whole link goes down
        proxy.cut()
        time.sleep(2.5)  # longer than expire_after
        assert outbox.depth == 1 or "expired" in caplog.text
        proxy.upstream = True
        proxy.accepting = True
        assert courier.link.wait_connected(10)
        fresh = courier.submit(Message("late/hall_light/set", b"ON"))
        got = copies(sub, 2.0)
        assert got == [("late/hall_light/set", b"ON", fresh.id)]  # the stale one: never
        assert outbox.depth == 0
    assert f"outbox dropped #{stale.seq} id={stale.id} late/kitchen_light/set: expired" in (
        caplog.text
    )


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_message_the_broker_cannot_take_is_set_aside_and_the_rest_flow(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, protocol: Protocol
) -> None:
    small = Mosquitto(tmp_path / "broker", extra=("max_packet_size 600",)).start()
    outbox = Outbox(OutboxSettings(tmp_path / "outbox.sqlite"))
    try:
        with (
            Subscriber(small.port, "poison/#", mqtt5=True) as sub,
            Agent(outbox, small.port, "poison", protocol=protocol) as courier,
        ):
            big = courier.submit(Message("poison/intent", b"x" * 803))
            for n in (1, 2):  # behind it
                courier.submit(Message("poison/light/set", str(n).encode()))
            # Exactly at the limit under MQTT 5 (the packet with its id and expiry): it fits.
            edge = next(
                Message("poison/edge", b"e" * n)
                for n in range(600)
                if _packet_size(Message("poison/edge", b"e" * n), "0" * 32, expiry=True) == 600
            )
            courier.submit(edge)
            started = time.monotonic()
            got = [sub.get(15) for _ in range(3)]
            flowed = time.monotonic() - started
            assert [m.payload for m in got] == [b"1", b"2", edge.payload]
            assert wait_until(lambda: outbox.depth == 0)
            assert courier.set_aside == 1 and outbox.held == 1
            assert copies(sub, 0.5) == []  # the big one never went through
            [(kept, cause)] = outbox.set_aside_entries()
            assert kept.id == big.id and kept.message.payload == b"x" * 803
    finally:
        small.stop()
    print(f"MQTT {protocol}: the rest flowed {flowed:.1f} s after the poison message")
    lines = [r.getMessage() for r in caplog.records if "set aside #" in r.getMessage()]
    assert len(lines) == 1 and f"set aside #{big.seq} id={big.id} poison/intent" in lines[0]
    if protocol == "5":  # mosquitto announces its limit in the CONNACK
        assert "over the broker's maximum packet size of 600" in cause
    else:  # 3.1.1 cannot say: the broker drops the connection on each try
        assert cause.startswith("failed 3 times in a row (the connection was lost")


def test_a_flapping_link_that_never_delivers_stops_the_watchdog(
    broker: Mosquitto,  # noqa: F811
    outbox: Outbox,
    tmp_path: Path,
) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))  # where systemd's socket would be
    notify.settimeout(1.0)
    with (
        notify,
        Proxy(broker.port) as proxy,
        # The message is never set aside here (a slow machine loses it in flight three
        # times before the flapping second is up): this test is about the watchdog.
        Agent(outbox, proxy.port, "flap", flapping=1.0, poison_after=1000) as courier,
    ):
        liveness = Liveness(
            Notifier(str(tmp_path / "notify"), watchdog_usec=2_000_000),
            {"courier thread": courier},
            stall_timeout=60.0,
        )
        assert liveness.check() and notify.recv(64) == b"WATCHDOG=1"
        proxy.upstream = False  # every connection dies with the message in flight
        courier.submit(Message("flap/light/set", b"ON"))
        assert courier.stuck == ""
        deadline = time.monotonic() + 10
        while not courier.stuck and time.monotonic() < deadline:
            proxy.cut()  # the link connects (upstream comes back briefly) and drops again
            proxy.upstream = True
            courier.link.wait_connected(2)
            proxy.upstream = False
            time.sleep(0.3)
        assert "nothing delivered for" in courier.stuck and "flapping" in courier.stuck
        assert not liveness.check()  # no ping: systemd restarts the agent
        assert notify.recv(256).startswith(b"STATUS=unhealthy: courier thread: nothing delivered")
        proxy.upstream = True
        proxy.cut()
        assert wait_until(lambda: outbox.depth == 0 and not courier.stuck, 10)
        assert liveness.check() and notify.recv(64) == b"WATCHDOG=1"


# -- a full disk --------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs: the outbox's own filesystem, which the test fills up."""
    try:
        with small_filesystem(tmp_path / "small") as mount:
            yield mount
    except NoSmallDisk as err:
        pytest.skip(str(err))


def test_a_full_disk_sends_each_message_once_refuses_new_ones_and_recovers(
    broker: Mosquitto,  # noqa: F811
    small_disk: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    outbox = Outbox(OutboxSettings(small_disk / "outbox.sqlite", min_free=64 * 1024))
    stored = [outbox.put(Message("full/light/set", str(n).encode())) for n in range(5)]
    filler = fill(small_disk)
    with (
        Proxy(broker.port) as proxy,
        Subscriber(broker.port, "full/#", mqtt5=True) as sub,
    ):
        proxy.accepting = False  # the broker comes back after the disk filled up
        agent = Agent(outbox, proxy.port, "full")
        agent.link.start()
        agent.courier.start()
        courier = agent.courier
        try:
            time.sleep(0.3)
            proxy.accepting = True
            got = copies(sub, 3.0)
            # Each acknowledged once, though none could be deleted: no resend storm.
            assert Counter(id_ for _, _, id_ in got) == {e.id: 1 for e in stored}
            assert outbox.depth == 5 and courier.wait_drained(0.1)
            assert "database or disk is full" in courier.disk_problem
            assert not courier.publish(Message("full/light/set", b"new"))
            filler.unlink()  # space comes back: the removals finish by themselves
            assert wait_until(lambda: outbox.depth == 0 and not courier.disk_problem)
            assert courier.publish(Message("full/light/set", b"new"))
            assert [p for _, p, _ in copies(sub, 2.0)] == [b"new"]
        finally:
            agent.__exit__()
    text = caplog.text
    assert "cannot rollback" not in text
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.name in ("agent.delivery", "agent.outbox")
    ]
    assert errors == [
        f"outbox {small_disk / 'outbox.sqlite'}: database or disk is full;"
        f" #{stored[0].seq} id={stored[0].id} was delivered and will not be sent again;"
        " delivery goes on, retrying the removal"
    ]
    refused = [r.getMessage() for r in caplog.records if "not queued for" in r.getMessage()]
    assert refused == [
        f"not queued for full/light/set: only 0 KiB free on {small_disk}, below the 64 KiB"
        " the outbox keeps free; free some space"
    ]
    assert "resolved, the outbox is writable again" in text


# -- two agents on one broker -------------------------------------------------------------


def test_default_ids_come_from_the_host_and_the_machine(tmp_path: Path) -> None:
    assert default_site_id("Kitchen-Pi.local") == "Kitchen-Pi"
    assert default_site_id("pi 4+living#room") == "pi-4-living-room"
    assert default_site_id("") == "default"
    first, second = tmp_path / "a", tmp_path / "b"
    first.write_text("3d1219c7c4c5404aaa1f6d2a48adfda4\n")
    second.write_text("9f0e6a1b2c3d4e5f60718293a4b5c6d7\n")
    assert machine_tag(first) != machine_tag(second)
    assert machine_tag(first) == machine_tag(first)
    assert machine_tag(tmp_path / "missing") == machine_tag(tmp_path / "missing too")  # host
    settings = MqttSettings(HOST)
    assert settings.site_id == default_site_id()
    assert settings.client_id == f"voice-agent-{settings.site_id}-{machine_tag()}"


def test_two_agents_with_the_same_site_id_on_two_machines_stay_connected(
    broker: Mosquitto,  # noqa: F811
    tmp_path: Path,
) -> None:
    ids = []
    for name, machine in (("a", "3d1219c7c4c5404aaa1f6d2a48adfda4"), ("b", "9f0e6a1b2c3d")):
        (tmp_path / name).write_text(machine)
        ids.append(f"voice-agent-kitchen-{machine_tag(tmp_path / name)}")
    links = [
        MqttLink(MqttSettings(HOST, broker.port, site_id="kitchen", client_id=id_, **FAST))
        for id_ in ids
    ]
    for link in links:
        link.start()
    try:
        assert all(link.wait_connected(10) for link in links)
        time.sleep(3.0)
        assert [link.connects for link in links] == [1, 1]  # nobody was knocked off
        assert all(link.connected for link in links)
    finally:
        for link in links:
            link.stop()


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_duplicate_client_id_is_logged_once_with_the_fix(
    broker: Mosquitto,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
    protocol: Protocol,
) -> None:
    settings = MqttSettings(
        HOST, broker.port, client_id="voice-agent-twin", protocol=protocol, **FAST
    )
    links = [MqttLink(settings), MqttLink(settings)]
    for link in links:
        link.start()
    try:
        assert wait_until(lambda: "uses the client id" in caplog.text, 15)
        time.sleep(1.0)  # more take-overs: still one line
    finally:
        for link in links:
            link.stop()
    lines = [r.getMessage() for r in caplog.records if "uses the client id" in r.getMessage()]
    # mosquitto 2.0 closes the socket rather than sending MQTT 5's 0x8E "session taken over".
    assert lines[0] == (
        f"MQTT broker {settings.address}: disconnected 3 times within 5 s of connecting:"
        " probably another client uses the client id 'voice-agent-twin'; give each agent its"
        " own mqtt.client_id (or leave it empty and set a distinct mqtt.site_id)"
    )
    assert len(lines) <= 2  # once per link (each of the two logs it once)


def test_doctor_fails_the_state_directory_below_the_free_space_floor(small_disk: Path) -> None:
    settings = OutboxSettings(small_disk / "state" / "outbox.sqlite", min_free=64 * 1024)
    (small_disk / "state").mkdir()
    config = SimpleNamespace(outbox=settings)  # the one section the check reads
    assert check_state_directory(config).ok  # type: ignore[arg-type]
    fill(small_disk)
    check = check_state_directory(config)  # type: ignore[arg-type]
    assert not check.ok
    assert check.detail.endswith(
        ", 0.0 MiB free: only 0 KiB free, below the 64 KiB the outbox keeps free: new commands"
        " are refused"
    )
    assert check.hint == f"free some space on {small_disk / 'state'}"


def test_a_consumer_that_was_away_does_not_get_an_expired_command_from_the_broker(
    broker: Mosquitto,  # noqa: F811
    tmp_path: Path,
) -> None:
    # A consumer with a persistent session (Home Assistant restarting): the broker keeps
    # what arrives meanwhile, and would hand it over however late; the Message Expiry
    # Interval (MQTT 5) tells it when to throw it away instead.
    Subscriber(broker.port, "away/#", client_id="away-consumer", mqtt5=True).close()
    outbox = Outbox(OutboxSettings(tmp_path / "outbox.sqlite", expire_after=2.0))
    with Agent(outbox, broker.port, "away") as courier:
        stale = courier.submit(Message("away/kitchen_light/set", b"ON"))
        fresh = courier.submit(Message("away/hall_light/set", b"ON"), expire_after=60.0)
        assert courier.wait_drained(5)
    time.sleep(3.0)  # the consumer comes back after the first command's expiry
    with Subscriber(broker.port, "away/#", client_id="away-consumer", mqtt5=True) as sub:
        got = copies(sub, 1.0)
    assert got == [("away/hall_light/set", b"ON", fresh.id)]  # not stale.id
    assert stale.id != fresh.id


def test_a_full_disk_is_named_in_one_line_not_hidden_behind_a_rollback_error(
    small_disk: Path,
) -> None:
    now = [1_800_000_000.0]
    settings = OutboxSettings(small_disk / "outbox.sqlite", min_free=0, expire_after=5.0)
    with Outbox(settings, lambda: now[0]) as outbox:
        # One transaction (the WAL grows by a page per commit); enough messages that
        # deleting them all needs new pages.
        outbox.put_many([Message(f"rollback/{n}", b"x" * 200) for n in range(200)])
        fill(small_disk)
        with pytest.raises(sqlite3.OperationalError) as put:
            outbox.put(Message("rollback/new", b"x" * 2000))
        now[0] += 10  # all of them expired
        with pytest.raises(sqlite3.OperationalError) as prune:
            outbox.prune()
        assert (str(put.value), str(prune.value)) == ("database or disk is full",) * 2
        assert outbox.depth == 200  # nothing half done
