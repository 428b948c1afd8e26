"""A real mosquitto for the MQTT tests: plain, with a password file, or with TLS.

Each broker listens on a free loopback port with a config written to a temporary
directory; TLS certificates (a CA, a server certificate for localhost/127.0.0.1, and an
unrelated CA for the "wrong CA" case) are made at test time with the openssl CLI.
Import the fixtures into a test module or conftest:

    from tests.agent.broker import auth_broker, broker, tls_broker  # noqa: F401
"""

from __future__ import annotations

import getpass
import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.broker import free_port, listening, terminate

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_PASSWD = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
HOST = "127.0.0.1"
USERNAME = "agent"
PASSWORD = "s3cret-pw"


# The product's own helpers (agent/broker.py runs the demo's broker the same way).
_port_open = listening


@dataclass(frozen=True)
class Certificates:
    """PEM files of a test PKI."""

    ca: Path
    server_cert: Path
    server_key: Path
    wrong_ca: Path
    other_host_cert: Path
    """Signed by ``ca`` too, but for another host (other.example) only."""
    other_host_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def _self_signed_ca(directory: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2",
        "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )  # fmt: skip


def make_certificates(directory: Path) -> Certificates:
    """A CA, a server certificate it signed for localhost and 127.0.0.1, one it signed for
    another host, and a stranger CA."""
    directory.mkdir(parents=True, exist_ok=True)
    _self_signed_ca(directory, "ca")
    _self_signed_ca(directory, "wrong-ca")
    _server_certificate(directory, "server", "localhost", "DNS:localhost,IP:127.0.0.1")
    _server_certificate(directory, "other-host", "other.example", "DNS:other.example")
    return Certificates(
        directory / "ca.crt", directory / "server.crt", directory / "server.key",
        directory / "wrong-ca.crt", directory / "other-host.crt", directory / "other-host.key",
    )  # fmt: skip


def _server_certificate(directory: Path, name: str, common_name: str, names: str) -> None:
    """``name``.crt and .key: a server certificate from ``ca`` for ``names`` (subjectAltName)."""
    (directory / f"{name}.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyAgreement\n"
        "extendedKeyUsage=serverAuth\n"
        f"subjectAltName={names}\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid\n"
    )
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={common_name}",
        cwd=directory,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext",
        cwd=directory,
    )  # fmt: skip


class Mosquitto:
    """One mosquitto process; ``stop()`` (or the fixture) terminates it."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        certificates: Certificates | None = None,
        password: bool = False,
        persistent: bool = False,
        acl: str | None = None,
        extra: tuple[str, ...] = (),
        other_host: bool = False,
    ) -> None:
        """``persistent``: keep sessions and queued messages across ``stop()``/``start()``
        (a restart on the same port), as a broker with a disk does. ``acl``: the text of
        an ``acl_file`` (mosquitto's format: ``user NAME`` then ``topic read|write|readwrite
        PATTERN`` lines; anything not granted is denied). ``extra``: more configuration
        lines, e.g. ``max_packet_size 600``. ``other_host``: with ``certificates``, serve
        the certificate issued for another host name."""
        self.directory = directory
        self.port = port or free_port()
        self.certificates = certificates
        directory.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} {HOST}"]
        if persistent:
            # Written on a clean stop (SIGTERM) and read back on start.
            lines += ["persistence true", f"persistence_location {directory}/"]
        else:
            lines.append("persistence false")
        lines += [
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if getpass.getuser() == "root":
            # mosquitto drops root to the "mosquitto" user, who cannot read the temp dir.
            lines.append("user root")
        if password:
            passwd = directory / "passwd"
            subprocess.run(
                [MOSQUITTO_PASSWD, "-b", "-c", str(passwd), USERNAME, PASSWORD],
                check=True,
                capture_output=True,
            )
            lines += ["allow_anonymous false", f"password_file {passwd}"]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:
            acl_path = directory / "acl"
            acl_path.write_text(acl)
            lines.append(f"acl_file {acl_path}")
        if certificates is not None:
            cert, key = (
                (certificates.other_host_cert, certificates.other_host_key)
                if other_host
                else (certificates.server_cert, certificates.server_key)
            )
            lines += [f"cafile {certificates.ca}", f"certfile {cert}", f"keyfile {key}"]
        lines += extra
        self.config = directory / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = directory / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> Mosquitto:
        """Start the broker and wait until its port accepts connections."""
        with self.log.open("ab") as log:
            self._process = subprocess.Popen(
                [MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + timeout
        while not _port_open(self.port):
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"mosquitto did not listen on {self.port}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self._process is not None:
            terminate(self._process)
        self._process = None


class Subscriber:
    """A paho client that subscribes before returning and collects every message it gets."""

    def __init__(
        self,
        port: int,
        topics: str | tuple[str, ...],
        *,
        ca_file: Path | None = None,
        username: str | None = None,
        password: str | None = None,
        client_id: str = "",
        mqtt5: bool = False,
    ) -> None:
        """``client_id``: a persistent session under that id (the broker queues QoS 1
        messages while this subscriber is cut off); empty: a clean session. ``mqtt5``:
        speak MQTT 5, so that messages keep their user properties (``user_properties``)."""
        self.messages: queue.Queue[paho.MQTTMessage] = queue.Queue()
        self._subscribed = threading.Event()
        topic_list = (topics,) if isinstance(topics, str) else topics
        connect_properties = None
        if mqtt5:
            client = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
            )
            if client_id:
                # MQTT 5's persistent session: kept for an hour after a disconnect.
                connect_properties = Properties(PacketTypes.CONNECT)
                connect_properties.SessionExpiryInterval = 3600
        else:
            client = paho.Client(
                CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=not client_id
            )
        # Back quickly after a broker restart (paho's default waits up to 2 minutes).
        client.reconnect_delay_set(0.1, 1.0)
        if username is not None:
            client.username_pw_set(username, password)
        if ca_file is not None:
            client.tls_set(ca_certs=str(ca_file))

        def on_connect(c: paho.Client, u: object, f: object, rc: object, p: object) -> None:
            c.subscribe([(t, 1) for t in topic_list])

        def on_subscribe(c: paho.Client, u: object, mid: int, rcs: object, p: object) -> None:
            self._subscribed.set()

        def on_message(c: paho.Client, u: object, message: paho.MQTTMessage) -> None:
            self.messages.put(message)

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        if mqtt5:
            client.connect(
                HOST, port, keepalive=10, clean_start=not client_id, properties=connect_properties
            )
        else:
            client.connect(HOST, port, keepalive=10)
        client.loop_start()
        self._client = client
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError("subscriber did not get its SUBACK")

    def get(self, timeout: float = 5.0) -> paho.MQTTMessage:
        """The next message, or AssertionError when none comes within ``timeout``."""
        try:
            return self.messages.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no MQTT message within {timeout} s") from None

    def wait_for(self, topic: str, payload: bytes | None = None, timeout: float = 5.0):
        """The first message on ``topic`` (with ``payload``, if given), skipping others."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no message on {topic} ({payload!r}) within {timeout} s")
            message = self.get(left)
            if message.topic == topic and (payload is None or message.payload == payload):
                return message

    def drain(self, seconds: float) -> list[paho.MQTTMessage]:
        """Every message that arrives within ``seconds`` (to count copies of each)."""
        got = []
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                got.append(self.messages.get(timeout=left))
            except queue.Empty:
                break
        return got

    @staticmethod
    def user_properties(message: paho.MQTTMessage) -> dict[str, str]:
        """The MQTT 5 user properties of ``message`` (empty under 3.1.1)."""
        properties = getattr(message, "properties", None)
        return dict(getattr(properties, "UserProperty", None) or [])

    def json(self, timeout: float = 5.0) -> tuple[str, object]:
        message = self.get(timeout)
        return message.topic, json.loads(message.payload)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``condition`` until it holds or ``timeout`` seconds pass; its last value."""
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


@pytest.fixture(scope="session")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """An anonymous mosquitto on a free loopback port."""
    process = Mosquitto(tmp_path_factory.mktemp("mosquitto")).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def auth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A mosquitto that wants ``USERNAME``/``PASSWORD``."""
    process = Mosquitto(tmp_path_factory.mktemp("mosquitto-auth"), password=True).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def tls_broker(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[Mosquitto]:
    """An anonymous mosquitto that speaks only TLS, with a certificate from ``certificates.ca``."""
    process = Mosquitto(tmp_path_factory.mktemp("mosquitto-tls"), certificates=certificates)
    process.start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def other_host_broker(
    tmp_path_factory: pytest.TempPathFactory, certificates: Certificates
) -> Iterator[Mosquitto]:
    """A TLS mosquitto whose certificate, from the right CA, names other.example only."""
    process = Mosquitto(
        tmp_path_factory.mktemp("mosquitto-other-host"), certificates=certificates, other_host=True
    )
    process.start()
    yield process
    process.stop()


ACL_DENIED = "zigbee2mqtt/kitchen_light/set"
"""The action topic that ``acl_broker`` denies to ``USERNAME``."""
ACL = f"""\
# Anonymous clients (the tests' subscribers) read everything and write nothing.
topic read #

# The agent may write its Hermes and availability topics and the actions of other rooms,
# not {ACL_DENIED}: anything not granted here is denied.
user {USERNAME}
topic write hermes/#
topic write voice-agent/#
topic write zigbee2mqtt/living_room_light/set
topic write acl/allowed/#
"""


@pytest.fixture(scope="session")
def acl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """An anonymous mosquitto whose ACL denies ``ACL_DENIED`` to the user ``USERNAME``
    (who logs in without a password: there is no password file)."""
    process = Mosquitto(tmp_path_factory.mktemp("mosquitto-acl"), acl=ACL).start()
    yield process
    process.stop()
