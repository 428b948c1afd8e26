"""The MQTT link against a real mosquitto: availability, will, PUBACK, reconnects, auth, TLS."""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.actions import Message
from agent.mqtt import MqttLink, MqttSettings, backoff
from tests.agent.broker import (  # noqa: F401
    HOST,
    PASSWORD,
    USERNAME,
    Certificates,
    Mosquitto,
    Subscriber,
    auth_broker,
    broker,
    certificates,
    free_port,
    tls_broker,
)

ROOT = Path(__file__).resolve().parents[2]
FAST = {"reconnect_min": 0.1, "reconnect_max": 0.5}


def wait_log(caplog: pytest.LogCaptureFixture, text: str, timeout: float = 5.0) -> str:
    """The first captured log line containing ``text``; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for record in caplog.records:
            line = record.getMessage()
            if text in line:
                return line
        time.sleep(0.05)
    raise AssertionError(f"no log line with {text!r}; got {caplog.messages}")


@pytest.fixture(autouse=True)
def _mqtt_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="agent.mqtt")


def test_online_is_retained_and_stop_publishes_offline(broker: Mosquitto) -> None:  # noqa: F811
    settings = MqttSettings(HOST, broker.port, site_id="avail", **FAST)
    assert settings.availability_topic == "voice-agent/avail/availability"
    assert settings.client_id == "voice-agent-avail"
    link = MqttLink(settings)
    link.start()
    try:
        assert link.wait_connected(10)
        assert link.connected
        with Subscriber(broker.port, settings.availability_topic) as late:
            online = late.wait_for(settings.availability_topic, b"online")
            assert online.retain  # a subscriber that comes later still learns the state
            link.stop()
            assert late.wait_for(settings.availability_topic, b"offline").payload == b"offline"
        assert not link.connected
        with Subscriber(broker.port, settings.availability_topic) as after:
            retained = after.get()
            assert (retained.payload, retained.retain) == (b"offline", True)
    finally:
        link.stop()


CHILD = """
import sys, time
from agent.mqtt import MqttLink, MqttSettings
link = MqttLink(MqttSettings("127.0.0.1", int(sys.argv[1]), site_id="killed", keepalive=5))
link.start()
if not link.wait_connected(10):
    sys.exit(3)
print("ready", flush=True)
time.sleep(60)
"""


def test_last_will_says_offline_when_the_agent_is_killed(broker: Mosquitto) -> None:  # noqa: F811
    topic = "voice-agent/killed/availability"
    with Subscriber(broker.port, topic) as sub:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(broker.port)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            sub.wait_for(topic, b"online")
            os.kill(child.pid, signal.SIGKILL)
            will = sub.wait_for(topic, b"offline", timeout=10)
            assert will.payload == b"offline"
        finally:
            child.kill()
            child.wait()
    with Subscriber(broker.port, topic) as after:
        assert after.get().payload == b"offline"  # the will was retained


def test_qos1_publish_is_acknowledged_and_delivered(broker: Mosquitto) -> None:  # noqa: F811
    link = MqttLink(MqttSettings(HOST, broker.port, site_id="qos", **FAST))
    with Subscriber(broker.port, "zigbee2mqtt/#") as sub:
        link.start()
        try:
            assert link.wait_connected(10)
            message = Message("zigbee2mqtt/kitchen_light/set", b'{"state":"ON"}')
            assert link.publish(message, timeout=5)
            got = sub.wait_for(message.topic)
            assert (got.payload, got.qos) == (message.payload, 1)
        finally:
            link.stop()


def test_publish_without_a_connection_returns_false_at_once() -> None:
    link = MqttLink(MqttSettings(HOST, free_port(), site_id="nowhere", **FAST))
    started = time.monotonic()
    assert link.publish(Message("a/b", b"x"), timeout=5) is False
    assert time.monotonic() - started < 1
    assert not link.connected


def test_a_broker_that_is_down_at_start_is_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    link = MqttLink(MqttSettings(HOST, port, site_id="late", **FAST))
    link.start()
    late_broker = Mosquitto(tmp_path, port=port)
    try:
        line = wait_log(caplog, "connection refused")
        assert f"127.0.0.1:{port}" in line and "retrying" in line
        assert not link.connected
        assert link.publish(Message("late/x", b"1"), timeout=1) is False
        late_broker.start()
        assert link.wait_connected(10)
        with Subscriber(port, "late/#") as sub:
            assert link.publish(Message("late/x", b"2"), timeout=5)
            assert sub.wait_for("late/x").payload == b"2"
    finally:
        link.stop()
        late_broker.stop()
    # One error line for the outage, not one per retry.
    refused = [r for r in caplog.records if "connection refused" in r.getMessage()]
    assert sum(r.levelno == logging.ERROR for r in refused) == 1


def test_a_broker_restart_is_survived_and_online_is_announced_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    restarting = Mosquitto(tmp_path).start()
    settings = MqttSettings(HOST, restarting.port, site_id="restart", **FAST)
    link = MqttLink(settings)
    link.start()
    try:
        assert link.wait_connected(10)
        restarting.stop()
        wait_log(caplog, "lost connection to MQTT broker")
        assert link.publish(Message("restart/x", b"lost"), timeout=1) is False
        restarting.start()
        assert link.wait_connected(10)
        with Subscriber(restarting.port, ("restart/#", settings.availability_topic)) as sub:
            # The new broker has no retained state: the link announced itself again.
            assert sub.wait_for(settings.availability_topic, b"online").retain
            assert link.publish(Message("restart/x", b"back"), timeout=5)
            assert sub.wait_for("restart/x").payload == b"back"
    finally:
        link.stop()
        restarting.stop()


def test_wrong_password_is_one_clear_line_and_publish_fails(
    auth_broker: Mosquitto,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    wrong = "not-the-password"
    settings = MqttSettings(
        HOST, auth_broker.port, username=USERNAME, password=wrong, site_id="auth", **FAST
    )
    link = MqttLink(settings)
    link.start()
    try:
        line = wait_log(caplog, "broker refused the connection")
        assert "broker refused the connection: not authorized" in line
        assert link.publish(Message("x/y", b"1"), timeout=1) is False
        time.sleep(0.5)  # a few retries
    finally:
        link.stop()
    assert wrong not in caplog.text
    assert wrong not in repr(settings) and wrong not in repr(link)
    refusals = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(refusals) == 1


def test_right_password_connects(auth_broker: Mosquitto) -> None:  # noqa: F811
    settings = MqttSettings(
        HOST, auth_broker.port, username=USERNAME, password=PASSWORD, site_id="auth-ok", **FAST
    )
    link = MqttLink(settings)
    link.start()
    try:
        assert link.wait_connected(10)
        assert link.publish(Message("auth/ok", b"1"), timeout=5)
    finally:
        link.stop()


def test_tls_with_the_right_ca(tls_broker: Mosquitto, certificates: Certificates) -> None:  # noqa: F811
    settings = MqttSettings(
        "localhost", tls_broker.port, tls=True, ca_file=str(certificates.ca), site_id="tls",
        **FAST,
    )  # fmt: skip
    link = MqttLink(settings)
    with Subscriber(tls_broker.port, "tls/#", ca_file=certificates.ca) as sub:
        link.start()
        try:
            assert link.wait_connected(10)
            assert link.publish(Message("tls/x", b"secret"), timeout=5)
            assert sub.wait_for("tls/x").payload == b"secret"
        finally:
            link.stop()


def test_tls_with_a_wrong_ca_says_certificate_verify_failed(
    tls_broker: Mosquitto,  # noqa: F811
    certificates: Certificates,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    settings = MqttSettings(
        "localhost", tls_broker.port, tls=True, ca_file=str(certificates.wrong_ca),
        site_id="tls-bad", **FAST,
    )  # fmt: skip
    link = MqttLink(settings)
    link.start()
    try:
        line = wait_log(caplog, "certificate verify failed")
        assert f"localhost:{tls_broker.port}" in line
        assert not link.connected
        assert link.publish(Message("tls/x", b"1"), timeout=1) is False
    finally:
        link.stop()


def test_plain_client_against_a_tls_port_does_not_raise(
    tls_broker: Mosquitto,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    link = MqttLink(MqttSettings(HOST, tls_broker.port, site_id="mixup", **FAST))
    link.start()
    try:
        wait_log(caplog, "connection closed before the broker answered")
        assert not link.connected
        assert link.publish(Message("a/b", b"1"), timeout=1) is False
    finally:
        link.stop()


def test_backoff_grows_is_capped_and_jittered() -> None:
    rng = random.Random(7)
    delays = [backoff(n, 1.0, 60.0, rng) for n in range(12)]
    for n, delay in enumerate(delays):
        ceiling = min(60.0, 2.0**n)
        assert max(1.0, ceiling / 2) <= delay <= ceiling
    assert delays[-1] >= 30.0
    spread = {round(backoff(5, 1.0, 60.0, rng), 3) for _ in range(20)}
    assert len(spread) > 10  # jittered, not lockstep


def test_settings_are_checked_and_the_password_is_not_in_repr() -> None:
    settings = MqttSettings("broker", username="u", password="hunter2")
    assert "hunter2" not in repr(settings)
    with pytest.raises(ValueError):
        MqttSettings("broker", ca_file="/etc/ca.pem")  # a CA without TLS is a mistake
    with pytest.raises(ValueError):
        MqttSettings("broker", reconnect_min=5, reconnect_max=1)
    with pytest.raises(ValueError):
        MqttSettings("broker", availability_topic="voice-agent/+/availability")
    with pytest.raises(ValueError):
        MqttSettings("broker", password="only-a-password")
