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
from agent.mqtt import MqttLink, MqttSettings, backoff, machine_tag
from tests.agent.broker import (  # noqa: F401
    ACL_DENIED,
    HOST,
    PASSWORD,
    USERNAME,
    Certificates,
    Mosquitto,
    Subscriber,
    acl_broker,
    auth_broker,
    broker,
    certificates,
    free_port,
    other_host_broker,
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
    assert settings.client_id == f"voice-agent-avail-{machine_tag()}"
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


def test_tls_to_a_broker_whose_certificate_names_another_host_is_refused(
    other_host_broker: Mosquitto,  # noqa: F811
    certificates: Certificates,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The right CA signed it, so only the host-name check stands between the agent and a
    # broker impersonating this one with any certificate that CA ever issued.
    settings = MqttSettings(
        "localhost", other_host_broker.port, tls=True, ca_file=str(certificates.ca),
        site_id="tls-host", **FAST,
    )  # fmt: skip
    link = MqttLink(settings)
    link.start()
    try:
        line = wait_log(caplog, "certificate verify failed")
        assert line.startswith(
            f"MQTT broker localhost:{other_host_broker.port}: TLS certificate verify failed:"
            " Hostname mismatch, certificate is not valid for 'localhost'."
        ), line
        time.sleep(0.5)
        assert not link.connected and link.connects == 0
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


def test_mqtt5_sends_the_id_as_a_user_property_and_leaves_the_payload_alone(
    broker: Mosquitto,  # noqa: F811
) -> None:
    link = MqttLink(MqttSettings(HOST, broker.port, site_id="v5-id", **FAST))
    assert link.settings.protocol == "5"  # the default
    with Subscriber(broker.port, "v5id/#", mqtt5=True) as sub:
        link.start()
        try:
            assert link.wait_connected(10)
            payload = b'{"state":"ON"}'
            assert link.publish(Message("v5id/kitchen_light/set", payload), id="0f3a")
            assert link.publish(Message("v5id/plain", b"x"))  # no id, no property
            got = sub.wait_for("v5id/kitchen_light/set")
            assert got.payload == payload  # byte for byte what the spec wrote
            assert Subscriber.user_properties(got) == {"id": "0f3a"}
            assert Subscriber.user_properties(sub.wait_for("v5id/plain")) == {}
        finally:
            link.stop()


def test_protocol_3_1_1_connects_and_has_no_user_properties(
    broker: Mosquitto,  # noqa: F811
) -> None:
    link = MqttLink(MqttSettings(HOST, broker.port, site_id="v311", protocol="3.1.1", **FAST))
    with Subscriber(broker.port, "v311/#", mqtt5=True) as sub:
        link.start()
        try:
            assert link.wait_connected(10)
            assert link.publish(Message("v311/x", b"1"), id="0f3a")
            got = sub.wait_for("v311/x")
            assert (got.payload, Subscriber.user_properties(got)) == (b"1", {})
        finally:
            link.stop()
    with pytest.raises(ValueError, match="protocol"):
        MqttSettings(HOST, protocol="4")  # type: ignore[arg-type]


def test_an_acl_denial_is_a_refusal_under_mqtt5_and_silent_under_3_1_1(
    acl_broker: Mosquitto,  # noqa: F811
) -> None:
    denied = Message(ACL_DENIED, b'{"state":"ON"}')
    allowed = Message("acl/allowed/x", b"1")
    with Subscriber(acl_broker.port, ("zigbee2mqtt/#", "acl/#")) as sub:
        for protocol in ("5", "3.1.1"):
            settings = MqttSettings(
                HOST, acl_broker.port, username=USERNAME, protocol=protocol,  # type: ignore[arg-type]
                site_id=f"acl-{protocol.replace('.', '')}", **FAST,
            )  # fmt: skip
            link = MqttLink(settings)
            link.start()
            try:
                assert link.wait_connected(10)
                receipt = link.deliver(denied, 5, id="denied-1")
                if protocol == "5":
                    assert not receipt.acknowledged and receipt.not_authorized
                    assert receipt.refused == "Not authorized (0x87)"
                else:
                    # MQTT 3.1.1 has no way to say no: acknowledged, and dropped.
                    assert receipt.acknowledged and not receipt.refused
                assert link.deliver(allowed, 5).acknowledged
                assert sub.wait_for("acl/allowed/x").payload == b"1"
            finally:
                link.stop()
        with pytest.raises(AssertionError):
            sub.wait_for(ACL_DENIED, timeout=0.3)  # the broker never passed it on


def test_mqtt5_against_a_3_1_1_only_broker_says_which_setting_to_change(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from agent.broker import start_broker

    old = start_broker("amqtt")  # answers no MQTT 5 CONNECT: the keepalive ends the wait
    link = MqttLink(MqttSettings(HOST, old.port, site_id="old", keepalive=2, **FAST))
    link.start()
    try:
        line = wait_log(caplog, "connection closed before the broker answered", timeout=10)
        assert 'if the broker speaks only MQTT 3.1.1, set mqtt.protocol = "3.1.1"; retry' in line
        assert not link.connected
    finally:
        link.stop()
        old.stop()
    old = start_broker("amqtt")
    link = MqttLink(MqttSettings(HOST, old.port, site_id="old", protocol="3.1.1", **FAST))
    link.start()
    try:
        assert link.wait_connected(10)
    finally:
        link.stop()
        old.stop()
