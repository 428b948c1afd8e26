"""Delivery through the real daemon (``python -m agent run``, Korean speech on stdin): a 30 s
broker outage, kill -9, a broker that is down at start-up, and the failures that keep
messages in the outbox (a wrong CA, a wrong password, an ACL that denies the action).

The scenarios live in bench/reliability.py, which prints their figures; here they are
asserted. Every message the outbox stored is named by the daemon's debug log
(``outbox #N id=X topic queued``); the MQTT 5 subscriber sees the same id as the user
property ``id``, so "in order, nothing lost, repeats only of the same id" is checked id by id.
"""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.actions import Message
from agent.outbox import Outbox, OutboxSettings
from bench.reliability import (
    TOPICS,
    UTTERANCE,
    Agent,
    Delivery,
    kill9,
    outage,
    synthesize,
    write_config,
)
from tests.agent.broker import (  # noqa: F401
    ACL_DENIED,
    PASSWORD,
    USERNAME,
    Certificates,
    Mosquitto,
    Subscriber,
    acl_broker,
    auth_broker,
    certificates,
    tls_broker,
)

FAST = "reconnect_min = 0.1\nreconnect_max = 0.5\n"


@pytest.fixture(scope="module")
def commands(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    """16 kHz PCM of the three commands of bench/reliability.py."""
    return synthesize(tmp_path_factory.mktemp("speech"))


def check_delivery(result: Delivery) -> None:
    assert result.stored, "the daemon stored nothing"
    assert result.delivered == len(result.stored), "messages were lost"
    # In order once repeats are dropped, and a repeat is always of the same (id, topic):
    # at least once, each copy marked by the id of the first.
    assert result.in_order
    assert set(result.got) == set(result.stored)


def test_200_commands_across_a_30_s_broker_outage_arrive_in_order(tmp_path: Path) -> None:
    result = outage(tmp_path, commands=200, seconds=30.0)
    check_delivery(result)
    # Speech is not what this measures: espeak's Korean in a stream is heard right ~90% of
    # the time, and every utterance, command or not, goes through the outbox all the same.
    assert result.commands >= 190
    assert result.actions >= 150
    assert result.waited > 0.8 * len(result.stored)  # most went through the outage


def test_kill_9_with_50_actions_queued_then_a_restart_delivers_all_50(tmp_path: Path) -> None:
    result = kill9(tmp_path, actions=50)
    check_delivery(result)
    assert result.actions >= 50
    with Outbox(OutboxSettings(tmp_path / "outbox.sqlite")) as outbox:
        assert outbox.depth == 0


@pytest.fixture
def down_then_up(tmp_path: Path) -> Iterator[tuple[Mosquitto, Subscriber]]:
    """A broker that is down, with a consumer's persistent session waiting on its disk."""
    broker = Mosquitto(tmp_path / "broker", persistent=True).start()
    subscriber = Subscriber(broker.port, TOPICS, client_id="late-consumer", mqtt5=True)
    broker.stop()
    yield broker, subscriber
    subscriber.close()
    broker.stop()


def test_a_broker_down_at_start_up_is_reported_and_the_command_goes_out_when_it_comes(
    tmp_path: Path, commands: list[bytes], down_then_up: tuple[Mosquitto, Subscriber]
) -> None:
    broker, subscriber = down_then_up
    config = write_config(tmp_path / "c.toml", broker.port, tmp_path / "outbox.sqlite", mqtt=FAST)
    agent = Agent(config)
    try:
        agent.wait_line(f"MQTT broker 127.0.0.1:{broker.port}: connection refused")
        agent.listening()
        assert any("not reachable yet; listening anyway" in line for line in agent.lines)
        agent.speak(commands, 1)
        agent.wait_heard(1)
        heard = next(line for line in agent.lines if UTTERANCE.search(line))
        assert "3 queued (broker has not acknowledged; kept in the outbox)" in heard
        stored = agent.queued()
        broker.start()
        got = [subscriber.get(15) for _ in stored]
        ids = [(Subscriber.user_properties(m)["id"], m.topic) for m in got]
        assert ids == stored
        assert got[-1].topic.startswith("zigbee2mqtt/")  # the device action, last
        assert agent.finish() == 0
    finally:
        agent.close()
    errors = [line for line in agent.lines if line.startswith("ERROR")]
    assert len(errors) == 1, errors  # one line for the outage, not one per retry


def _stop(agent: Agent) -> None:
    # Sent once the daemon is idle in its read (at info level it logs nothing between
    # utterances): agent.service raises its stop exception from the signal handler, and
    # one that lands inside a log write is swallowed by logging's handleError, so the
    # daemon would go on running (a known bug of the service, not of delivery).
    time.sleep(1.0)
    os.kill(agent.pid, signal.SIGTERM)
    assert agent.process.wait(30) == 0
    agent.close()


FAILURES = {
    "wrong CA": "certificate verify failed",
    "wrong password": "broker refused the connection: not authorized",
    "ACL denial": f"{ACL_DENIED}: Not authorized (0x87); check the broker's ACL for {USERNAME}.",
}


@pytest.mark.parametrize("failure", FAILURES)
def test_a_refusing_broker_is_one_clear_line_and_the_outbox_keeps_the_message(
    failure: str,
    tmp_path: Path,
    commands: list[bytes],
    request: pytest.FixtureRequest,
) -> None:
    if failure == "wrong CA":
        broker: Mosquitto = request.getfixturevalue("tls_broker")
        pki: Certificates = request.getfixturevalue("certificates")
        lines = f'tls = true\nca_file = "{pki.wrong_ca}"\n'
        host = "localhost"
    elif failure == "wrong password":
        broker = request.getfixturevalue("auth_broker")
        secret = tmp_path / "password"
        secret.write_text(PASSWORD + "-not")
        secret.chmod(0o600)
        lines = f'username = "{USERNAME}"\npassword_file = "{secret}"\n'
        host = "127.0.0.1"
    else:
        broker = request.getfixturevalue("acl_broker")
        lines = f'username = "{USERNAME}"\n'
        host = "127.0.0.1"
    outbox = tmp_path / "outbox.sqlite"
    config = write_config(
        tmp_path / "c.toml", broker.port, outbox, mqtt=FAST + lines, log_level="info"
    )
    config.write_text(config.read_text().replace('host = "127.0.0.1"', f'host = "{host}"'))
    agent = Agent(config)
    try:
        agent.listening()
        agent.speak(commands, 1)  # the kitchen light: the action topic the ACL denies
        agent.wait_heard(1)
        agent.wait_line(FAILURES[failure])
        _stop(agent)
    finally:
        agent.close()
    errors = [line for line in agent.lines if line.startswith("ERROR")]
    assert len(errors) == 1 and FAILURES[failure] in errors[0], errors
    assert not any("Traceback" in line for line in agent.lines)
    assert not any((PASSWORD + "-not") in line for line in agent.lines)
    with Outbox(OutboxSettings(outbox, expire_after=None)) as kept:
        left = [e.message.topic for e in kept.peek(10)]
    if failure == "ACL denial":
        # The Hermes messages went through; the refused action was set aside and kept.
        assert left == [ACL_DENIED]
    else:
        assert len(left) == 3 and left[0] == "hermes/asr/textCaptured"
        assert left[1].startswith("hermes/intent/") and left[2] == ACL_DENIED


def test_the_outbox_logs_the_id_lines_these_tests_read(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.outbox")
    with Outbox(OutboxSettings(tmp_path / "outbox.sqlite")) as box:
        entry = box.put(Message("a/b", b"1"), id="abc")
    assert f"outbox #{entry.seq} id=abc a/b queued" in caplog.text
