"""Home Assistant MQTT discovery: the agent as one device, with one trigger per intent.

Follows Home Assistant's per-component discovery schema
(https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery): a retained JSON config
on ``<prefix>/<component>/<node_id>/<object_id>/config`` per entity, and an empty retained
payload to remove one. The device has

- ``binary_sensor`` ``online``: the retained availability topic (online/offline, the will);
- ``sensor`` ``last_transcript``, ``last_intent`` (its slots as attributes), ``recognized``,
  ``not_recognized`` and ``wakes`` (``total_increasing``), all read from one retained state
  document on ``voice-agent/<site_id>/state`` that :class:`HomeAssistant` publishes per
  utterance and per wake word;
- ``device_automation`` ``intent_<name>`` per intent of the model
  (https://www.home-assistant.io/integrations/device_trigger.mqtt/), on the Hermes topic
  ``hermes/intent/<name>`` that the daemon already publishes through the outbox, filtered
  to this site by ``value_template``/``payload``, so an automation gets the whole Hermes
  message as ``trigger.payload_json`` and no extra message is sent per command.

Removing an intent from the model must remove its trigger. The topics published last time
are remembered in ``homeassistant.json`` beside the outbox rather than read back from the
broker: MQTT has no "end of retained messages" marker, so reading back means guessing a
timeout, and a broker that lost its retained store would leave nothing to compare with.
The file is rewritten only after the broker acknowledged every removal and config, so a
crash in between repeats them on the next start.

The state document goes straight through the link from this module's thread, not through
the outbox: each one supersedes the last, so durability buys nothing, while queueing it
would grow every utterance's fsynced transaction, make commands wait behind it, and after
an outage replay every stale intermediate state. Once the link is back, only the latest
is published.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from agent import __version__
from agent.actions import Message

if TYPE_CHECKING:
    from agent.config import Config
    from agent.daemon import Counters, Daemon, Outcome
    from agent.metadata import ModelInfo
    from agent.mqtt import MqttLink

__all__ = [
    "RECORD_FILE",
    "Device",
    "HomeAssistant",
    "discovery_messages",
    "load_record",
    "node_id_for",
    "removals",
    "save_record",
    "start_homeassistant",
    "state_message",
    "state_topic",
]

log = logging.getLogger(__name__)

RECORD_FILE: Final = "homeassistant.json"
SUPPORT_URL: Final = "https://github.com/voice-agent/voice-agent"
TRIGGER_TYPE: Final = "intent"
"""Device triggers' ``type``; the ``subtype`` is the intent's name, so Home Assistant's
editor shows "LightOn intent"."""
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
# Home Assistant renders a template result "None" as "unknown".
_INTENT = "{{ value_json.last_intent.intent if value_json.last_intent else None }}"
_SLOTS = "{{ (value_json.last_intent.slots if value_json.last_intent else {}) | tojson }}"


def _safe(text: str) -> str:
    """``text`` as a discovery topic level (letters, digits, '_', '-'); a short hash keeps
    two names that differ only in other characters (e.g. Korean ones) apart."""
    safe = _UNSAFE.sub("_", text)
    if safe == text:
        return text
    return f"{safe}_{hashlib.sha1(text.encode('utf-8')).hexdigest()[:6]}"


def node_id_for(site_id: str) -> str:
    """The default discovery node id of a site: ``voice_agent_<site_id>``."""
    return _safe(f"voice_agent_{site_id}")


def state_topic(site_id: str) -> str:
    """The retained state document the sensors read."""
    return f"voice-agent/{site_id}/state"


@dataclass(frozen=True)
class Device:
    """Everything discovery needs to know about this agent."""

    site_id: str
    availability_topic: str
    model_name: str
    model_version: str
    intents: tuple[str, ...]
    prefix: str = "homeassistant"
    node_id: str = ""
    """Empty: :func:`node_id_for` the site."""
    version: str = __version__

    @property
    def node(self) -> str:
        return self.node_id or node_id_for(self.site_id)


def _config_topic(device: Device, component: str, object_id: str) -> str:
    return f"{device.prefix}/{component}/{device.node}/{_safe(object_id)}/config"


def _retained(topic: str, config: Mapping[str, Any]) -> Message:
    payload = json.dumps(config, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    return Message(topic, payload.encode("utf-8"), 1, True)


def discovery_messages(device: Device) -> tuple[Message, ...]:
    """The retained discovery configs of the device's entities and triggers, in a stable
    order (entities, then one trigger per intent)."""
    node = device.node
    info = {
        "identifiers": [node],
        "name": f"Voice agent {device.site_id}",
        "manufacturer": "voice-agent",
        "model": f"{device.model_name} {device.model_version}",
        "sw_version": device.version,
    }
    origin = {"name": "voice-agent", "sw_version": device.version, "support_url": SUPPORT_URL}
    state = state_topic(device.site_id)
    availability = {
        "availability_topic": device.availability_topic,
        "payload_available": "online",
        "payload_not_available": "offline",
    }

    def entity(component: str, object_id: str, **config: Any) -> Message:
        return _retained(
            _config_topic(device, component, object_id),
            {**config, "unique_id": f"{node}_{object_id}", "device": info, "origin": origin},
        )

    messages = [
        entity(
            "binary_sensor",
            "online",
            name="Online",
            state_topic=device.availability_topic,
            payload_on="online",
            payload_off="offline",
            device_class="connectivity",
            entity_category="diagnostic",
        ),
        entity(
            "sensor",
            "last_transcript",
            name="Last transcript",
            state_topic=state,
            value_template="{{ value_json.transcript }}",
            icon="mdi:account-voice",
            **availability,
        ),
        entity(
            "sensor",
            "last_intent",
            name="Last intent",
            state_topic=state,
            value_template=_INTENT,
            json_attributes_topic=state,
            json_attributes_template=_SLOTS,
            icon="mdi:text-recognition",
            **availability,
        ),
        entity(
            "sensor",
            "recognized",
            name="Commands recognized",
            state_topic=state,
            value_template="{{ value_json.recognized }}",
            state_class="total_increasing",
            icon="mdi:check-circle-outline",
            **availability,
        ),
        entity(
            "sensor",
            "not_recognized",
            name="Commands not recognized",
            state_topic=state,
            value_template="{{ value_json.not_recognized }}",
            state_class="total_increasing",
            icon="mdi:help-circle-outline",
            **availability,
        ),
        entity(
            "sensor",
            "wakes",
            name="Wake words heard",
            state_topic=state,
            # A state document from before this sensor existed counts as none.
            value_template="{{ value_json.wakes | default(0) }}",
            state_class="total_increasing",
            icon="mdi:ear-hearing",
            **availability,
        ),
    ]
    for intent in device.intents:
        messages.append(
            _retained(
                _config_topic(device, "device_automation", f"intent_{intent}"),
                {
                    "automation_type": "trigger",
                    "topic": f"hermes/intent/{intent}",
                    "type": TRIGGER_TYPE,
                    "subtype": intent,
                    # Every site publishes on hermes/intent/<name>: only this one's count.
                    "value_template": "{{ value_json.siteId }}",
                    "payload": device.site_id,
                    "qos": 1,
                    "device": info,
                    "origin": origin,
                },
            )
        )
    return tuple(messages)


def removals(previous: Iterable[str], current: Sequence[Message]) -> tuple[Message, ...]:
    """Empty retained messages for the configs published before but not now."""
    keep = {message.topic for message in current}
    return tuple(Message(topic, b"", 1, True) for topic in sorted(set(previous) - keep))


def state_message(
    site_id: str, last: Outcome | None, command: Outcome | None, counters: Counters
) -> Message:
    """The retained state document: the last transcript, the last command (intent, slots,
    confidence) and the counters."""
    last_intent = None
    if command is not None and command.decision.classification is not None:
        c = command.decision.classification
        last_intent = {
            "intent": c.intent,
            "slots": {slot.name: slot.value for slot in c.slots},
            "confidence": round(c.confidence, 4),
            "text": command.decision.transcript.text,
        }
    document = {
        "site_id": site_id,
        "transcript": last.decision.transcript.text if last is not None else None,
        "time": _iso(counters.last_utterance) if last is not None else None,
        "last_intent": last_intent,
        "recognized": counters.recognized,
        "not_recognized": counters.not_recognized,
        "wakes": counters.wakes,
    }
    return _retained(state_topic(site_id), document)


def _iso(seconds: float) -> str | None:
    if not seconds:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="seconds")


def load_record(path: Path) -> frozenset[str]:
    """The config topics published last time (none when the file is missing or unreadable:
    then nothing can be removed, which is logged)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        topics = data["topics"]
        if not isinstance(topics, list) or not all(isinstance(t, str) for t in topics):
            raise ValueError("'topics' is not a list of strings")
    except FileNotFoundError:
        return frozenset()
    except (OSError, ValueError, KeyError, TypeError) as err:
        log.warning("%s: ignored (%s); stale Home Assistant triggers stay", path, err)
        return frozenset()
    return frozenset(topics)


def save_record(path: Path, topics: Iterable[str]) -> None:
    """Remember ``topics`` atomically (temporary file, fsync, rename): it is what lets the
    next start remove what this one published."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as file:
        json.dump({"topics": sorted(topics)}, file, indent=1)
        file.write("\n")
        file.flush()
        os.fsync(file.fileno())
    os.replace(tmp, path)


class HomeAssistant:
    """The thread that keeps Home Assistant informed: discovery configs (and removals) on
    every new connection, the state document after every utterance."""

    def __init__(
        self,
        link: MqttLink,
        site_id: str,
        configs: Sequence[Message],
        record: Path,
        counters: Counters,
        *,
        poll: float = 1.0,
    ) -> None:
        """``configs``: what to announce (empty: only remove what was announced before)."""
        self.link = link
        self.site_id = site_id
        self.configs = tuple(configs)
        self.record = record
        self.counters = counters
        self.poll = poll
        self._previous = load_record(record)
        self._announced = False
        self._dirty = bool(self.configs)  # the counters start at 0 again
        self._last: Outcome | None = None
        self._command: Outcome | None = None
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def observe(self, outcome: Outcome) -> None:
        """The daemon's per-utterance hook: remember it and wake the thread (no I/O)."""
        self._last = outcome
        if outcome.decision.accepted:
            self._command = outcome
        self._dirty = True
        self._wake.set()

    def woke(self, woken: object) -> None:
        """The daemon's per-wake-word hook: the wake count changed (no I/O)."""
        self._dirty = True
        self._wake.set()

    def use(self, configs: Sequence[Message]) -> None:
        """Announce ``configs`` instead (a reloaded model), removing what is no longer in them."""
        self.configs = tuple(configs)
        self._announced = False
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="homeassistant", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping:
            if not self.link.connected:
                self._announced = False
            else:
                if not self._announced:
                    self._announced = self._announce()
                if self._announced and self._dirty and self.configs:
                    self._dirty = False
                    message = state_message(self.site_id, self._last, self._command, self.counters)
                    if not self.link.publish(message, 5.0):
                        self._dirty = True
            self._wake.wait(self.poll)
            self._wake.clear()

    def _announce(self) -> bool:
        """Remove what is gone, publish every config; True when all were acknowledged."""
        gone = removals(self._previous, self.configs)
        for message in (*gone, *self.configs):
            if self._stopping or not self.link.publish(message, 5.0):
                return False
        current = {message.topic for message in self.configs}
        if current != self._previous:
            try:
                if current:
                    save_record(self.record, current)
                else:
                    self.record.unlink(missing_ok=True)
            except OSError as err:
                log.warning("%s: cannot write: %s", self.record, err.strerror or err)
            self._previous = frozenset(current)
        if gone:
            log.info("Home Assistant: removed %d discovery configs", len(gone))
        if self.configs:
            log.info(
                "Home Assistant: announced %d entities and triggers under %s",
                len(self.configs),
                self.configs[0].topic.rsplit("/", 4)[0],  # the prefix
            )
        return True


def start_homeassistant(
    config: Config, link: MqttLink, daemon: Daemon, stack: ExitStack
) -> HomeAssistant | None:
    """Start discovery when ``homeassistant.discovery`` is on, or to remove the device a
    previous run announced when it is now off; None when there is nothing to do."""
    settings = config.homeassistant
    record = config.outbox.path.parent / RECORD_FILE
    configs: tuple[Message, ...] = ()

    def announce(info: ModelInfo) -> tuple[Message, ...]:
        return discovery_messages(
            Device(
                site_id=config.mqtt.site_id,
                availability_topic=config.mqtt.availability_topic,
                model_name=info.name,
                model_version=info.version,
                intents=tuple(info.intents),
                prefix=settings.prefix,
                node_id=settings.node_id,
            )
        )

    if settings.discovery:
        configs = announce(daemon.classifier.info)
    elif not record.exists():
        return None
    bridge = HomeAssistant(link, config.mqtt.site_id, configs, record, daemon.counters)
    if configs:
        daemon.on_outcome.append(bridge.observe)
        daemon.on_wake.append(bridge.woke)
        # A reloaded model may have other intents: triggers come and go with it.
        daemon.on_models.append(lambda classifier: bridge.use(announce(classifier.info)))
    bridge.start()
    stack.callback(bridge.stop)
    return bridge
