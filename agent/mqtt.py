"""The daemon's one MQTT connection: availability, reconnects, acknowledged publishes.

A paho-mqtt 2.x client on its own network thread. The broker may be down when the agent
starts or go away later: the link keeps retrying with exponential backoff plus jitter (so
a room full of Pis does not reconnect in lockstep) and never raises for a network
problem. A retained ``online``/``offline`` availability message, with ``offline`` as the
last will, tells Home Assistant whether the agent is alive.

MQTT 5 by default (``protocol = "3.1.1"`` for older brokers, and for amqtt): every message
from the outbox then carries its outbox id as the user property ``id``, so a consumer can
drop a repeat without touching the payload (zigbee2mqtt's must stay as the spec wrote it),
and a broker that refuses a publish says so in the PUBACK's reason code (mosquitto answers
0x87 "Not authorized" when its ACL denies the topic). Under MQTT 3.1.1 there is no way to
say no: mosquitto acknowledges a denied publish like any other and drops it silently.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import random
import re
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent.actions import Message

logger = logging.getLogger(__name__)

ONLINE = b"online"
OFFLINE = b"offline"
PROTOCOLS: Final = ("5", "3.1.1")
Protocol = Literal["5", "3.1.1"]
NOT_AUTHORIZED: Final = 0x87
"""The PUBACK reason code of a publish the broker's ACL denies (MQTT 5)."""
SESSION_TAKEN_OVER: Final = 0x8E
"""The DISCONNECT reason code of a broker that let another client log in with our id."""
TAKEN_OVER_AFTER: Final = 3
"""Connections in a row that end within ``SHORT_LIVED`` seconds before the link suspects a
second client with the same id (when the broker does not say so with 0x8E)."""
SHORT_LIVED: Final = 5.0
MAX_INBOUND_PACKET: Final = 128 * 1024
"""The largest packet this client takes, sent as MQTT 5's Maximum Packet Size on CONNECT:
the broker discards a bigger message for us instead of sending it, so a stranger's huge
payload on a subscribed topic never reaches this process. Twice ``query.max_bytes``'s
ceiling, so an oversized text command of up to this size still arrives and is refused with
a log line. (MQTT 3.1.1 has no such limit: there the payload is checked after receipt.)"""


@dataclass(frozen=True)
class Receipt:
    """What became of one publish: acknowledged, refused by the broker, or not sent."""

    acknowledged: bool
    refused: str = ""
    """The broker's reason when its PUBACK said no (MQTT 5), e.g. "Not authorized (0x87)";
    empty when it was acknowledged or never reached the broker."""
    not_authorized: bool = False
    """The refusal was the broker's ACL (reason code 0x87)."""
    failed: str = ""
    """Why a publish that went out came to nothing: the connection was lost while it was
    in flight, or no PUBACK came in time (empty when it was never sent: not connected).
    A message that fails like this again and again is what the courier sets aside."""
    lost: bool = False
    """The connection ended while this publish waited for its PUBACK (the broker may have
    closed it because of this very message)."""
    undeliverable: str = ""
    """Why this message can never be sent on this connection (bigger than the broker's
    maximum packet size); the courier sets it aside at once."""


_SENT: Final = Receipt(True)
_UNSENT: Final = Receipt(False)


@dataclass(frozen=True)
class MqttSettings:
    """Where the broker is and how to log in; the password is the secret itself, never logged."""

    host: str
    port: int = 1883
    client_id: str = ""
    """Empty: ``voice-agent-<site_id>-<machine>`` (:func:`default_client_id`)."""
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_file: str | None = None
    """CA bundle that signed the broker's certificate; None: the system's trust store."""
    cert_file: str | None = None
    key_file: str | None = None
    keepalive: int = 30
    site_id: str = ""
    """Empty: from the host name (:func:`default_site_id`)."""
    availability_topic: str = ""
    """Empty: ``voice-agent/<site_id>/availability``."""
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    protocol: Protocol = "5"
    """MQTT version: "5" (ids as user properties, refusals as reason codes) or "3.1.1"."""

    def __post_init__(self) -> None:
        if not self.site_id:
            object.__setattr__(self, "site_id", default_site_id())
        if not self.client_id:
            object.__setattr__(self, "client_id", default_client_id(self.site_id))
        if not self.availability_topic:
            object.__setattr__(
                self, "availability_topic", f"voice-agent/{self.site_id}/availability"
            )
        if any(c in self.availability_topic for c in "+#\x00"):
            raise ValueError(f"availability topic {self.availability_topic!r} has a wildcard")
        if not 0 < self.reconnect_min <= self.reconnect_max:
            raise ValueError("need 0 < reconnect_min <= reconnect_max")
        if self.keepalive <= 0:
            raise ValueError("keepalive must be positive")
        if not self.tls and (self.ca_file or self.cert_file or self.key_file):
            raise ValueError("ca_file, cert_file and key_file need tls = true")
        if self.key_file and not self.cert_file:
            raise ValueError("key_file needs cert_file")
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


MACHINE_ID: Final = Path("/etc/machine-id")


def default_site_id(hostname: str | None = None) -> str:
    """The host name as a site id: letters, digits, '_' and '-' (anything else, such as the
    dots of a domain, becomes '-'), at most 64 characters; "default" when there is none."""
    name = (hostname if hostname is not None else socket.gethostname()).split(".")[0]
    site = re.sub(r"[^A-Za-z0-9_-]", "-", name)[:64].strip("-")
    return site or "default"


def machine_tag(machine_id: Path = MACHINE_ID) -> str:
    """8 hex digits that differ between machines: a hash of /etc/machine-id (systemd's,
    unique per installation, but not shown to the broker as is), else of the host name."""
    try:
        seed = machine_id.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        seed = ""
    seed = seed or socket.gethostname()
    return hashlib.sha256(f"voice-agent:{seed}".encode()).hexdigest()[:8]


def default_client_id(site_id: str) -> str:
    """``voice-agent-<site_id>-<machine>``: unique per machine even when two agents were
    given the same site id (a broker drops the first client when a second logs in with its
    id, so two agents with one id knock each other off every few seconds)."""
    return f"voice-agent-{site_id}-{machine_tag()}"


def _packet_size(message: Message, id: str | None, expiry: bool = False) -> int:
    """The size of the MQTT 5 PUBLISH packet (QoS 1) that carries ``message``: what a
    broker compares with its maximum packet size."""

    def varint(n: int) -> int:
        return 1 if n < 128 else 2 if n < 16_384 else 3 if n < 2_097_152 else 4

    properties = 0 if id is None else 1 + (2 + 2) + (2 + len(id.encode("utf-8")))
    properties += 5 if expiry else 0  # the Message Expiry Interval: 1 + 4 bytes
    remaining = (
        2 + len(message.topic.encode("utf-8")) + 2  # topic, packet id
        + varint(properties) + properties + len(message.payload)
    )  # fmt: skip
    return 1 + varint(remaining) + remaining


def backoff(attempt: int, low: float, high: float, rng: random.Random) -> float:
    """Seconds to wait before retry number ``attempt`` (0-based): exponential, capped, jittered.

    "Equal jitter": half of the exponential step is fixed, half random, so clients that
    lost the broker together spread out but none retries sooner than ``low``.
    """
    ceiling = min(high, low * 2.0 ** min(attempt, 32))
    return max(low, ceiling / 2 + rng.uniform(0, ceiling / 2))


def _describe_os_error(err: BaseException | None) -> str:
    """One line for a failed connection attempt, naming TLS verification failures plainly."""
    if isinstance(err, ssl.SSLCertVerificationError):
        return f"TLS certificate verify failed: {err.verify_message or err.reason}"
    if isinstance(err, ssl.SSLError):
        return f"TLS handshake failed: {err.reason or err}"
    if isinstance(err, ConnectionRefusedError):
        return "connection refused (is the broker running?)"
    if isinstance(err, TimeoutError):
        return "connection timed out"
    if err is None:
        return "connection failed"
    return str(err) or type(err).__name__


def authenticate(client: paho.Client, settings: MqttSettings) -> None:
    """Give ``client`` the settings' login and, with TLS, the broker check: every client of
    ours (the link, ``voice-agent doctor``) logs in the same way. CERT_REQUIRED and hostname
    checking, always: there is no insecure switch."""
    if settings.username is not None:
        client.username_pw_set(settings.username, settings.password)
    if settings.tls:
        client.tls_set(
            ca_certs=settings.ca_file,
            certfile=settings.cert_file,
            keyfile=settings.key_file,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )


class MqttLink:
    """A paho client that stays connected, announces availability and publishes with PUBACK."""

    def __init__(self, settings: MqttSettings, rng: random.Random | None = None) -> None:
        self.settings = settings
        self._rng = rng or random.Random()
        self._attempt = 0
        self._stopping = False
        self._last_problem = ""
        self._refused = ""
        self._ready = threading.Event()
        self._online_mid = -1
        self._started = False
        self._network: threading.Thread | None = None
        """paho's network thread, seen in ``on_pre_connect`` (paho keeps it private)."""
        # Inbound topics: subscribed again on every connect (the session is clean).
        self._handlers: dict[str, tuple[int, Callable[[str, bytes], None]]] = {}
        self._v5 = settings.protocol == "5"
        # PUBACK reason codes by message id, written by the network thread before paho marks
        # the publish done, so the waiting thread reads the one for its own publish (a mid
        # that paho reuses later overwrites the entry of an abandoned wait).
        self._acks: dict[int, ReasonCode] = {}
        self._acks_lock = threading.Lock()
        # Bumped whenever a connection ends: a publish waiting for its PUBACK sees it and
        # gives up at once (its copy in paho was discarded), instead of sitting out its
        # timeout.
        self._generation = 0
        self._connects = 0
        self._broker_max_packet = 0
        """The broker's Maximum Packet Size from its CONNACK (MQTT 5); 0: not announced."""
        self._short_lived = 0
        self._connected_at = 0.0
        self._taken_over_logged = False
        if self._v5:
            # MQTT 5 has no clean_session; a clean start is set at connect time.
            client = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=settings.client_id,
                protocol=paho.MQTTv5,
            )
        else:
            client = paho.Client(
                CallbackAPIVersion.VERSION2,
                client_id=settings.client_id,
                clean_session=True,
                protocol=paho.MQTTv311,
            )
        authenticate(client, settings)
        client.will_set(settings.availability_topic, OFFLINE, qos=1, retain=True)
        # paho reports exceptions raised in our callbacks only through its logger.
        paho_logger = logging.getLogger(f"{__name__}.paho.{settings.client_id}")
        paho_logger.addFilter(self._drop_stop_noise)
        client.enable_logger(paho_logger)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_pre_connect = self._on_pre_connect
        client.on_message = self._on_message
        self._client = client

    def _drop_stop_noise(self, record: logging.LogRecord) -> bool:
        # paho 2.2's network loop logs "Client is not connected" as an ERROR once more after
        # a clean disconnect and once per failed reconnect during an outage: noise, since
        # the link logs the outage itself, once per distinct problem.
        return not str(record.msg).startswith("Client is not connected")

    def __repr__(self) -> str:
        return f"MqttLink({self.settings!r}, connected={self.connected})"

    @property
    def alive(self) -> bool:
        """True from :meth:`start` while paho's network thread runs (connected or retrying).

        The thread is the one paho calls ``on_pre_connect`` on before every connection
        attempt; it dies only when a callback raises or on :meth:`stop`. The watchdog
        (:mod:`agent.liveness`) asks this: a dead thread would leave every command in the
        outbox forever with nothing in the log but its traceback.
        """
        if not self._started:
            return False
        thread = self._network
        return thread is None or thread.is_alive()  # None: started, not yet attempted

    @property
    def connected(self) -> bool:
        """True while the broker has accepted the connection and acknowledged ``online``."""
        return self._ready.is_set() and self._client.is_connected()

    @property
    def connects(self) -> int:
        """Successful connections since this link was made (the courier tells a link that
        flaps, connecting and dropping without delivering, from one that is down)."""
        return self._connects

    def wait_connected(self, timeout: float) -> bool:
        """Block until connected or ``timeout`` seconds pass; True when connected."""
        return self._ready.wait(timeout) and self._client.is_connected()

    def start(self) -> None:
        """Connect in the background; a broker that is down now is retried, never fatal."""
        logger.info("connecting to MQTT broker %s", self.settings.address)
        self._stopping = False
        if self._v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.MaximumPacketSize = MAX_INBOUND_PACKET
            self._client.connect_async(
                self.settings.host,
                self.settings.port,
                keepalive=self.settings.keepalive,
                clean_start=True,
                properties=properties,
            )
        else:
            self._client.connect_async(
                self.settings.host, self.settings.port, keepalive=self.settings.keepalive
            )
        self._network = None
        self._started = True
        self._client.loop_start()

    def publish(self, message: Message, timeout: float = 5.0, *, id: str | None = None) -> bool:
        """Publish and wait for the broker's acknowledgement (QoS 1); False if not delivered
        (or refused: see :meth:`deliver`, which says which)."""
        return self.deliver(message, timeout, id=id).acknowledged

    def deliver(
        self,
        message: Message,
        timeout: float = 5.0,
        *,
        id: str | None = None,  # shadows the builtin: the Hermes field is called id
        expires_in: float | None = None,
    ) -> Receipt:
        """Publish, wait for the broker's PUBACK (QoS 1) and say what it was.

        ``expires_in``: seconds the message still means something; under MQTT 5 it goes
        out as the Message Expiry Interval (rounded up), so that a broker holding it for a
        consumer that is away (a persistent session) discards it instead of handing it
        over late. Not for retained messages, whose expiry would empty the retained state.

        ``id``: the message's stable id, sent as the MQTT 5 user property ``id`` (ignored
        under 3.1.1). Never raises for a network problem: not connected, a lost
        connection or no PUBACK within ``timeout`` seconds give an unacknowledged receipt
        with no refusal; a PUBACK with a failure reason code gives one with ``refused``.
        """
        generation = self._generation  # before the check: a drop from now on is seen
        if not self.connected:
            logger.debug("not connected; dropping message to %s", message.topic)
            return _UNSENT
        expiry = self._v5 and expires_in is not None and not message.retain
        limit = self._broker_max_packet
        size = _packet_size(message, id, expiry)
        if limit and size > limit:
            return Receipt(
                False,
                undeliverable=f"{size} bytes as a packet, over the broker's maximum packet"
                f" size of {limit} (mosquitto's max_packet_size)",
            )
        properties = None
        if self._v5 and (id is not None or expiry):
            properties = Properties(PacketTypes.PUBLISH)
            if id is not None:
                properties.UserProperty = ("id", id)
            if expiry:
                properties.MessageExpiryInterval = max(1, math.ceil(expires_in))  # type: ignore[arg-type]
        try:
            info = self._client.publish(
                message.topic,
                message.payload,
                qos=message.qos,
                retain=message.retain,
                properties=properties,
            )
            deadline = time.monotonic() + timeout
            # paho wakes wait_for_publish on the PUBACK; the slices only notice a lost
            # connection (whose copy paho no longer holds: see _on_disconnect).
            while not info.is_published() and self._generation == generation:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                info.wait_for_publish(min(left, 0.05))
            delivered = info.is_published()
        except ValueError as err:
            # paho refuses the message itself (an invalid topic): it never will take it.
            return Receipt(False, failed=str(err), undeliverable=f"paho refuses it: {err}")
        except RuntimeError as err:
            logger.warning("publish to %s failed: %s", message.topic, err)
            return Receipt(False, failed=f"publish failed: {err}")
        with self._acks_lock:
            reason = self._acks.pop(info.mid, None)
        if not delivered:
            if self._generation != generation:
                return Receipt(
                    False, failed="the connection was lost while it was in flight", lost=True
                )
            logger.warning(
                "no acknowledgement for %s within %.1f s; dropping the connection so that"
                " the outbox, not paho, sends it again",
                message.topic, timeout,
            )  # fmt: skip
            self._drop_connection()
            return Receipt(False, failed=f"no PUBACK within {timeout:g} s")
        if reason is not None and reason.is_failure:
            return Receipt(
                False, f"{reason.getName()} (0x{reason.value:02x})", reason.value == NOT_AUTHORIZED
            )
        return _SENT

    def _drop_connection(self) -> None:
        """End the current connection so that paho reconnects (and discards its in-flight
        copies): a connection that swallowed a PUBACK cannot be trusted with the next one,
        and MQTT 5 allows a resend only on a new connection."""
        sock = self._client.socket()
        if isinstance(sock, socket.socket):  # TLS sockets too; not paho's websocket wrapper
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def subscribe(self, topic: str, qos: int, handler: Callable[[str, bytes], None]) -> None:
        """Call ``handler(topic, payload)`` for every message on ``topic`` (no wildcards),
        from now on and after every reconnect. Call before :meth:`start`.

        ``handler`` runs on paho's network thread, which also carries every PUBACK: it must
        return at once (hand the payload to a queue) and not raise.
        """
        if not topic or any(c in topic for c in "+#\x00"):
            raise ValueError(f"cannot subscribe to {topic!r}: empty or a wildcard")
        self._handlers[topic] = (qos, handler)
        if self._client.is_connected():
            self._client.subscribe(topic, qos)

    def publish_all(self, messages: Sequence[Message], timeout: float = 5.0) -> int:
        """Publish in order, each acknowledged before the next; how many were delivered
        (stops at the first that was not, so nothing arrives out of order)."""
        for count, message in enumerate(messages):
            if not self.publish(message, timeout):
                return count
        return len(messages)

    def flush(self, timeout: float) -> bool:
        """:meth:`publish` waits for each PUBACK itself, so there is nothing left to wait
        for: True while connected (the ``Publisher`` protocol of :mod:`agent.daemon`)."""
        return self.connected

    def stop(self, timeout: float = 2.0) -> None:
        """Announce ``offline`` (retained), disconnect cleanly and stop the network thread."""
        self._stopping = True
        was_connected = self.connected
        if was_connected:
            self.publish(Message(self.settings.availability_topic, OFFLINE, 1, True), timeout)
        self._ready.clear()
        self._client.disconnect()
        self._client.loop_stop()
        self._started = False
        if was_connected:
            logger.info("disconnected from MQTT broker %s", self.settings.address)

    # -- paho callbacks, on the network thread --------------------------------------------

    def _next_delay(self) -> float:
        delay = backoff(
            self._attempt, self.settings.reconnect_min, self.settings.reconnect_max, self._rng
        )
        self._attempt += 1
        return delay

    def _schedule_retry(self) -> float:
        # paho waits min_delay after a reset, so setting both bounds makes our delay its delay.
        delay = self._next_delay()
        self._client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]
        return delay

    def _problem(self, text: str, delay: float) -> None:
        # One line per distinct problem, not one per retry, so a broker down all night
        # does not fill the journal; the repeats go to debug.
        if text != self._last_problem:
            self._last_problem = text
            logger.error(
                "MQTT broker %s: %s; retrying (next in %.1f s)", self.settings.address, text, delay
            )
        elif logger.isEnabledFor(logging.DEBUG):
            logger.debug("MQTT broker %s: %s; retry in %.1f s", self.settings.address, text, delay)

    def _on_connect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if reason_code.is_failure:
            # The disconnect that follows schedules the retry and logs this.
            self._refused = f"broker refused the connection: {str(reason_code).lower()}"
            return
        # The outbox is the only thing that retransmits: whatever paho kept from an earlier
        # connection (a publish in flight when it broke) would otherwise go out again now,
        # before the courier could check its expiry, and a second time when the courier
        # sends it. paho documents this call for on_connect, before its own resend.
        client.drop_out_messages()
        self._attempt = 0
        self._last_problem = ""
        self._refused = ""
        self._connects += 1
        self._connected_at = time.monotonic()
        limit = getattr(properties, "MaximumPacketSize", 0) if properties is not None else 0
        self._broker_max_packet = limit if isinstance(limit, int) else 0
        # Ready once the broker has stored the retained ``online`` (its PUBACK), so that
        # anyone who subscribes after wait_connected() returns is told the state.
        info = client.publish(self.settings.availability_topic, ONLINE, qos=1, retain=True)
        self._online_mid = info.mid
        for topic, (qos, _) in tuple(self._handlers.items()):
            client.subscribe(topic, qos)
        sock = client.socket()
        if sock is not None:
            # paho leaves Nagle on: a publish right after our PUBACK for an inbound message
            # then waits for the broker's delayed TCP ACK, 40 ms a text command.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        logger.info("connected to MQTT broker %s", self.settings.address)

    def _on_publish(
        self,
        client: paho.Client,
        userdata: Any,
        mid: int,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        if mid == self._online_mid:
            self._ready.set()
        elif not reason_code.is_failure and not self._acks:
            # The common case, read by no one: deliver() treats a missing code as success.
            return
        else:
            with self._acks_lock:
                self._acks[mid] = reason_code

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        entry = self._handlers.get(message.topic)
        if entry is not None:
            entry[1](message.topic, message.payload)

    def _on_pre_connect(self, client: paho.Client, userdata: Any) -> None:
        self._network = threading.current_thread()

    def _on_connect_fail(self, client: paho.Client, userdata: Any) -> None:
        # paho calls this from inside its ``except OSError`` block, so the error is current.
        err = sys.exc_info()[1]
        self._problem(_describe_os_error(err), self._schedule_retry())

    def _on_disconnect(
        self,
        client: paho.Client,
        userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        properties: Properties | None,
    ) -> None:
        was_ready = self._ready.is_set()
        self._ready.clear()
        # paho would resend its unacknowledged copies on the next connection; the courier
        # decides what is sent again (and drops what expired meanwhile).
        client.drop_out_messages()
        self._generation += 1
        if self._stopping:
            return
        self._notice_take_over(reason_code)
        delay = self._schedule_retry()
        refused, self._refused = self._refused, ""
        if was_ready:
            logger.warning(
                "lost connection to MQTT broker %s (%s); reconnecting in %.1f s",
                self.settings.address,
                reason_code,
                delay,
            )
        elif refused:
            self._problem(refused, delay)
        else:
            # e.g. a plain client on a TLS port: the broker hangs up before any CONNACK; or a
            # broker that speaks only MQTT 3.1.1 (amqtt) ignores an MQTT 5 CONNECT until the
            # keepalive runs out.
            hint = (
                '; if the broker speaks only MQTT 3.1.1, set mqtt.protocol = "3.1.1"'
                if self._v5
                else ""
            )
            self._problem(
                f"connection closed before the broker answered ({reason_code}){hint}", delay
            )

    def _notice_take_over(self, reason_code: ReasonCode) -> None:
        """Log once when another client probably uses our client id: the broker then drops
        whichever connected first, so two agents with one id knock each other off every few
        seconds. MQTT 5 brokers may say so (reason code 0x8E; mosquitto 2.0 just closes the
        socket), otherwise connections that keep ending right after they began tell."""
        if self._connected_at:
            short = time.monotonic() - self._connected_at < SHORT_LIVED
            self._short_lived = self._short_lived + 1 if short else 0
        self._connected_at = 0.0
        if self._taken_over_logged:
            return
        client_id = self.settings.client_id
        if getattr(reason_code, "value", 0) == SESSION_TAKEN_OVER:
            cause = f"session taken over: another client uses the client id {client_id!r}"
        elif self._short_lived >= TAKEN_OVER_AFTER:
            cause = (
                f"disconnected {self._short_lived} times within {SHORT_LIVED:g} s of connecting:"
                f" probably another client uses the client id {client_id!r}"
            )
        else:
            return
        self._taken_over_logged = True
        logger.error(
            "MQTT broker %s: %s; give each agent its own mqtt.client_id (or leave it empty"
            " and set a distinct mqtt.site_id)",
            self.settings.address, cause,
        )  # fmt: skip
