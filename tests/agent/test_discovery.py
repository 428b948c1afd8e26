"""Home Assistant discovery: payloads against a schema written from HA's documentation, and
the real daemon (Korean speech, Vosk, the intent model, mosquitto) seen by a consumer that
reads discovery the way Home Assistant's MQTT integration does.

The consumer follows homeassistant/components/mqtt/discovery.py and trigger.py: it
subscribes to ``<prefix>/+/+/config`` and ``<prefix>/+/+/+/config``, keys each retained
config by (component, "node_id object_id"), forgets one on an empty payload, and fires a
device trigger when a message on its topic, passed through its ``value_template`` (Jinja2
with ``value_json``, sandboxed as in HA), equals its ``payload``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import paho.mqtt.client as paho
import pytest
from jinja2.sandbox import ImmutableSandboxedEnvironment
from paho.mqtt.enums import CallbackAPIVersion
from speech import SpeechFactory, korean_speech_fixture  # noqa: F401 - registers the fixture

from agent.actions import Message
from agent.classifier import IntentClassifier
from agent.daemon import Counters, Outcome, Timings
from agent.decision import DecisionSettings, decide
from agent.discovery import (
    Device,
    discovery_messages,
    load_record,
    node_id_for,
    removals,
    save_record,
    state_message,
)
from agent.recognizer import Transcript, packaged_model_dir
from tests.agent.broker import HOST, Mosquitto

ROOT = Path(__file__).resolve().parents[2]
KO_MODEL = ROOT / "models" / "smart-home-ko"
EN_MODEL = ROOT / "models" / "smart-home-en"
SCHEMA = json.loads(
    (Path(__file__).parent / "schemas" / "homeassistant-discovery.schema.json").read_text()
)
RATE = 22050  # espeak-ng's own rate: no resampling of the test speech
LIGHT_ON = "부엌 조명 좀 켜줘"
KO_INTENTS = ("LightOn", "LightOff", "MusicPlay", "MusicStop")
# Home Assistant's own pattern (homeassistant/components/mqtt/discovery.py).
TOPIC_MATCHER = re.compile(
    r"(?P<component>\w+)/(?:(?P<node_id>[a-zA-Z0-9_-]+)/)?(?P<object_id>[a-zA-Z0-9_-]+)/config"
)
JINJA = ImmutableSandboxedEnvironment()


def render(template: str, payload: bytes) -> str:
    """HA's ``async_render_with_possible_json_value``: ``value`` and ``value_json``."""
    text = payload.decode("utf-8")
    try:
        value_json = json.loads(text)
    except ValueError:
        value_json = None
    return JINJA.from_string(template).render(value=text, value_json=value_json)


def validate(topic: str, payload: dict[str, Any]) -> str:
    """Check one discovery message against the schema; its component."""
    match = TOPIC_MATCHER.fullmatch(topic.split("/", 1)[1])
    assert match is not None, f"Home Assistant would ignore {topic}"
    component = match["component"]
    jsonschema.validate(payload, {**SCHEMA, "$ref": f"#/$defs/{component}"})
    return component


def ko_device(site_id: str = "kitchen", prefix: str = "homeassistant") -> Device:
    info = IntentClassifier.load(KO_MODEL).info
    return Device(
        site_id=site_id,
        availability_topic=f"voice-agent/{site_id}/availability",
        model_name=info.name,
        model_version=info.version,
        intents=tuple(info.intents),
        prefix=prefix,
    )


# -- the payloads ---------------------------------------------------------------------------


def test_payloads_follow_the_documented_schema() -> None:
    messages = discovery_messages(ko_device())
    components = [validate(m.topic, json.loads(m.payload)) for m in messages]
    assert all(m.retain and m.qos == 1 for m in messages)
    assert sorted(components) == sorted(
        ["binary_sensor"] + ["sensor"] * 5 + ["device_automation"] * len(KO_INTENTS)
    )
    payloads = [json.loads(m.payload) for m in messages]
    triggers = [p for p in payloads if p.get("automation_type") == "trigger"]
    assert sorted(t["subtype"] for t in triggers) == sorted(KO_INTENTS)
    assert {t["topic"] for t in triggers} == {f"hermes/intent/{i}" for i in KO_INTENTS}
    # One device for everything; unique ids unique; (type, subtype) unique per device.
    assert len({json.dumps(p["device"], sort_keys=True) for p in payloads}) == 1
    ids = [p["unique_id"] for p in payloads if "unique_id" in p]
    assert len(ids) == len(set(ids)) == 6
    assert len({(t["type"], t["subtype"]) for t in triggers}) == len(triggers)
    counters = [p for p in payloads if p.get("state_class") == "total_increasing"]
    assert len(counters) == 3


def test_the_schema_rejects_what_home_assistant_rejects() -> None:
    """The schema is not a rubber stamp: each documented rule catches its violation."""
    trigger = json.loads(discovery_messages(ko_device())[-1].payload)
    sensor = json.loads(discovery_messages(ko_device())[1].payload)
    bad = [
        ("device_automation", {**trigger, "automation_type": "action"}),
        ("device_automation", {k: v for k, v in trigger.items() if k != "subtype"}),
        ("device_automation", {**trigger, "device": {"name": "no identifiers"}}),
        ("sensor", {k: v for k, v in sensor.items() if k != "state_topic"}),
        ("sensor", {k: v for k, v in sensor.items() if k != "unique_id"}),
        ("sensor", {**sensor, "state_class": "increasing"}),
        ("sensor", {**sensor, "origin": {"sw_version": "1"}}),
        ("sensor", {**sensor, "stat_t": "abbreviated/duplicate"}),
    ]
    for component, payload in bad:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(payload, {**SCHEMA, "$ref": f"#/$defs/{component}"})


def test_node_ids_are_valid_and_distinct() -> None:
    pattern = re.compile(r"[a-zA-Z0-9_-]+")
    ids = {node_id_for(site) for site in ("kitchen", "부엌", "거실", "living room", "living_room")}
    assert len(ids) == 5 and all(pattern.fullmatch(i) for i in ids)
    assert node_id_for("kitchen") == "voice_agent_kitchen"
    for message in discovery_messages(ko_device("부엌 2")):
        validate(message.topic, json.loads(message.payload))


def test_removals_clear_only_what_is_gone(tmp_path: Path) -> None:
    now = discovery_messages(ko_device())
    before = {m.topic for m in now} | {"homeassistant/device_automation/x/intent_Gone/config"}
    gone = removals(before, now)
    assert gone == (Message("homeassistant/device_automation/x/intent_Gone/config", b"", 1, True),)
    assert removals({m.topic for m in now}, now) == ()
    record = tmp_path / "homeassistant.json"
    assert load_record(record) == frozenset()
    save_record(record, before)
    assert load_record(record) == before
    assert [p.name for p in tmp_path.iterdir()] == ["homeassistant.json"]
    record.write_text("{not json")
    assert load_record(record) == frozenset()  # logged; nothing to remove, no crash


def test_state_document_feeds_the_sensors() -> None:
    """The sensors' templates, rendered as HA renders them, on the real classifier's output."""
    classifier = IntentClassifier.load(KO_MODEL)
    transcript = Transcript(LIGHT_ON, 0.9, (), 0.0, 1.5, 0.02)
    decision = decide(transcript, classifier, DecisionSettings())
    assert decision.accepted
    outcome = Outcome(decision, (), 0, True, Timings(0.02, 0.001, 0.002, 0.003), "s")
    counters = Counters(recognized=3, not_recognized=1, wakes=5)
    configs = {
        m.topic.split("/")[-2]: json.loads(m.payload) for m in discovery_messages(ko_device())
    }
    state = state_message("kitchen", outcome, outcome, counters)
    assert state.topic == configs["last_intent"]["state_topic"] and state.retain

    def sensor(name: str) -> str:
        return render(configs[name]["value_template"], state.payload)

    assert sensor("last_transcript") == LIGHT_ON
    assert sensor("last_intent") == "LightOn"
    attributes = render(configs["last_intent"]["json_attributes_template"], state.payload)
    assert json.loads(attributes) == {"room": "kitchen"}
    assert (sensor("recognized"), sensor("not_recognized"), sensor("wakes")) == ("3", "1", "5")
    # Before any command: "None", which Home Assistant shows as unknown.
    empty = state_message("kitchen", None, None, Counters())
    assert render(configs["last_intent"]["value_template"], empty.payload) == "None"
    assert (
        json.loads(render(configs["last_intent"]["json_attributes_template"], empty.payload)) == {}
    )


# -- a Home Assistant-like consumer and the real daemon --------------------------------------


class HomeAssistantLike:
    """Discovery and device triggers as Home Assistant's MQTT integration handles them."""

    def __init__(self, port: int, prefix: str) -> None:
        self.prefix = prefix
        self.configs: dict[tuple[str, str], dict[str, Any]] = {}
        self.removed: list[tuple[str, str]] = []
        self.fired: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self.states: dict[str, bytes] = {}
        self._attached: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._subacks: queue.Queue[int] = queue.Queue()
        client = paho.Client(CallbackAPIVersion.VERSION2)
        client.on_message = self._on_message
        client.on_subscribe = lambda c, u, mid, rc, p: self._subacks.put(mid)
        client.connect(HOST, port, keepalive=10)
        client.loop_start()
        self._client = client
        self._subscribe(f"{prefix}/+/+/config", f"{prefix}/+/+/+/config")

    def _subscribe(self, *topics: str) -> None:
        _, mid = self._client.subscribe([(topic, 1) for topic in topics])
        while self._subacks.get(timeout=10) != mid:
            pass

    def _on_message(self, client: paho.Client, userdata: object, msg: paho.MQTTMessage) -> None:
        with self._lock:
            if msg.topic.startswith(self.prefix + "/"):
                match = TOPIC_MATCHER.fullmatch(msg.topic[len(self.prefix) + 1 :])
                if match is not None:
                    component, node, object_id = match.groups()
                    key = (component, f"{node} {object_id}" if node else object_id)
                    if msg.payload:
                        self.configs[key] = json.loads(msg.payload)
                    elif self.configs.pop(key, None) is not None:
                        self.removed.append(key)
                    return
            self.states[msg.topic] = msg.payload
            for trigger in self._attached.get(msg.topic, []):
                value = render(trigger["value_template"], msg.payload)
                if trigger.get("payload") in (None, value):
                    self.fired.put((trigger["subtype"], json.loads(msg.payload)))

    def wait_for(self, count: int, timeout: float = 90.0) -> None:
        """Until exactly ``count`` configs are known."""
        deadline = time.monotonic() + timeout
        while len(self.configs) != count:
            assert time.monotonic() < deadline, f"{len(self.configs)} configs: {self.configs}"
            time.sleep(0.05)

    def devices(self) -> dict[str, list[tuple[str, str]]]:
        """Entities and triggers grouped by device identifier, as the device registry does."""
        grouped: dict[str, list[tuple[str, str]]] = {}
        for key, config in self.configs.items():
            for identifier in config["device"]["identifiers"]:
                grouped.setdefault(identifier, []).append(key)
        return grouped

    def attach(self, subtype: str) -> None:
        """An automation using this device trigger (HA subscribes to its topic then)."""
        trigger = next(c for c in self.configs.values() if c.get("subtype") == subtype)
        self._attached.setdefault(trigger["topic"], []).append(trigger)
        self._subscribe(trigger["topic"])

    def follow_state(self, topic: str) -> None:
        self._subscribe(topic)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


@pytest.fixture
def consumer_factory(broker: Mosquitto) -> Iterator[Any]:
    made: list[HomeAssistantLike] = []

    def make(prefix: str) -> HomeAssistantLike:
        made.append(HomeAssistantLike(broker.port, prefix))
        return made[-1]

    yield make
    for consumer in made:
        consumer.close()


def write_config(
    path: Path, broker: Mosquitto, site_id: str, prefix: str, model: Path, discovery: bool = True
) -> Path:
    # The Korean speech model knows no English words: only the Korean model's grammar.
    path.write_text(
        f"""
[model]
path = "{model}"
[vosk]
model = "{packaged_model_dir()}"
grammar = {"true" if model == KO_MODEL else "false"}
[audio]
source = "stdin"
rate = {RATE}
[wake]
engine = "none"
[mqtt]
host = "{HOST}"
port = {broker.port}
site_id = "{site_id}"
[outbox]
path = "{path.parent / "state" / "outbox.sqlite"}"
[homeassistant]
discovery = {"true" if discovery else "false"}
prefix = "{prefix}"
[status]
interval = 0
""",
        encoding="utf-8",
    )
    return path


class Agent:
    """``voice-agent run`` on stdin audio: it listens for as long as the pipe is open."""

    def __init__(self, config: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        # Audio must flow for the source to open; more than ~0.3 s of digital silence
        # before the first words makes this Vosk model mishear them ("켜줘" as "꺼").
        self.silence(0.3)

    def feed(self, audio: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(audio)
        self.process.stdin.flush()

    def silence(self, seconds: float) -> None:
        self.feed(b"\0\0" * int(RATE * seconds))

    def finish(self) -> tuple[int, str]:
        """Close the pipe (end of audio): the daemon delivers what is queued and exits."""
        try:  # communicate() closes stdin
            _, stderr = self.process.communicate(timeout=60)
        finally:
            if self.process.poll() is None:
                self.process.kill()
        return self.process.returncode, stderr.decode()


def test_home_assistant_sees_the_device_and_a_trigger_fires(
    broker: Mosquitto,
    korean_speech: SpeechFactory,
    consumer_factory: Any,
    tmp_path: Path,
) -> None:
    with wave.open(str(korean_speech(LIGHT_ON, RATE).path), "rb") as wav:
        speech = wav.readframes(wav.getnframes())
    ha = consumer_factory("ha-fire")
    agent = Agent(write_config(tmp_path / "config.toml", broker, "kitchen", "ha-fire", KO_MODEL))
    try:
        ha.wait_for(6 + len(KO_INTENTS))
        devices = ha.devices()
        assert list(devices) == ["voice_agent_kitchen"]
        assert sorted(devices["voice_agent_kitchen"]) == sorted(
            [
                ("binary_sensor", "voice_agent_kitchen online"),
                ("sensor", "voice_agent_kitchen last_transcript"),
                ("sensor", "voice_agent_kitchen last_intent"),
                ("sensor", "voice_agent_kitchen recognized"),
                ("sensor", "voice_agent_kitchen not_recognized"),
                ("sensor", "voice_agent_kitchen wakes"),
            ]
            + [("device_automation", f"voice_agent_kitchen intent_{i}") for i in KO_INTENTS]
        )
        for (component, _), config in ha.configs.items():
            jsonschema.validate(config, {**SCHEMA, "$ref": f"#/$defs/{component}"})
        ha.attach("LightOn")
        ha.attach("LightOff")
        state_topic = ha.configs[("sensor", "voice_agent_kitchen last_intent")]["state_topic"]
        online = ha.configs[("binary_sensor", "voice_agent_kitchen online")]["state_topic"]
        ha.follow_state(state_topic)
        ha.follow_state(online)

        agent.feed(speech)
        agent.silence(2.0)
        try:
            subtype, payload = ha.fired.get(timeout=30)
        except queue.Empty:
            raise AssertionError(f"no trigger fired; the agent said: {agent.finish()[1]}") from None
        assert subtype == "LightOn"
        # What an automation reads from trigger.payload_json: the Hermes intent message.
        assert payload["siteId"] == "kitchen"
        assert payload["intent"]["intentName"] == "LightOn"
        slots = {s["slotName"]: s["value"]["value"] for s in payload["slots"]}
        assert slots == {"room": "kitchen"}, payload

        deadline = time.monotonic() + 10
        while b'"recognized":1' not in ha.states.get(state_topic, b""):
            assert time.monotonic() < deadline, ha.states
            time.sleep(0.05)
        configs = {key[1].split()[1]: c for key, c in ha.configs.items()}
        state = ha.states[state_topic]
        assert render(configs["last_intent"]["value_template"], state) == "LightOn"
        assert json.loads(render(configs["last_intent"]["json_attributes_template"], state)) == {
            "room": "kitchen"
        }
        assert render(configs["last_transcript"]["value_template"], state) == LIGHT_ON
        assert ha.states[online] == b"online"
    finally:
        status, stderr = agent.finish()
    assert status == 0, stderr
    assert ha.fired.empty(), "LightOff fired for a LightOn command"
    assert "announced 10 entities and triggers" in stderr


def test_a_restart_without_an_intent_removes_its_trigger(
    broker: Mosquitto, consumer_factory: Any, tmp_path: Path
) -> None:
    """Another model (the English one: LightOn and LightOff too, but no MusicPlay or
    MusicStop) on the same site: the triggers it lacks are removed, the rest stay."""
    ha = consumer_factory("ha-restart")
    config = tmp_path / "config.toml"
    en_intents = tuple(IntentClassifier.load(EN_MODEL).info.intents)
    gone = [
        ("device_automation", f"voice_agent_hall intent_{i}") for i in ("MusicPlay", "MusicStop")
    ]
    kept = ("device_automation", "voice_agent_hall intent_LightOn")

    write_config(config, broker, "hall", "ha-restart", KO_MODEL)
    agent = Agent(config)
    ha.wait_for(6 + len(KO_INTENTS))
    assert all(key in ha.configs for key in gone)
    assert agent.finish()[0] == 0

    write_config(config, broker, "hall", "ha-restart", EN_MODEL)
    agent = Agent(config)
    deadline = time.monotonic() + 90
    while len(ha.configs) != 6 + len(en_intents):
        assert time.monotonic() < deadline, ha.configs
        agent.silence(0.2)
        time.sleep(0.2)
    assert agent.finish()[0] == 0
    assert sorted(ha.removed) == gone
    assert kept in ha.configs
    # Gone from the broker too: a Home Assistant that starts now never hears of them.
    late = consumer_factory("ha-restart")
    late.wait_for(6 + len(en_intents))
    assert not any(key in late.configs for key in gone)

    # Turning discovery off removes the whole device on the next start.
    write_config(config, broker, "hall", "ha-restart", EN_MODEL, discovery=False)
    agent = Agent(config)
    deadline = time.monotonic() + 90
    while ha.configs:
        assert time.monotonic() < deadline, ha.configs
        agent.silence(0.2)
        time.sleep(0.2)
    assert agent.finish()[0] == 0
    assert not (tmp_path / "state" / "homeassistant.json").exists()


def test_a_reload_announces_the_new_models_triggers(
    broker: Mosquitto, consumer_factory: Any, tmp_path: Path
) -> None:
    """SIGHUP with another model in place (Korean -> English): without a restart, the
    triggers of intents the new model lacks are removed and its own are announced."""
    ha = consumer_factory("ha-reload")
    model = tmp_path / "model"
    shutil.copytree(KO_MODEL, model)
    # Not the packaged Korean model's path, so open vocabulary: the English model's grammar
    # then does not matter to the Korean speech model.
    config = write_config(tmp_path / "config.toml", broker, "den", "ha-reload", model)
    en_intents = tuple(IntentClassifier.load(EN_MODEL).info.intents)
    gone = [
        ("device_automation", f"voice_agent_den intent_{i}") for i in ("MusicPlay", "MusicStop")
    ]

    agent = Agent(config)
    try:
        ha.wait_for(6 + len(KO_INTENTS))
        shutil.copytree(EN_MODEL, tmp_path / "model.new")
        model.rename(tmp_path / "model.old")
        (tmp_path / "model.new").rename(model)
        agent.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 60
        while len(ha.configs) != 6 + len(en_intents):
            assert time.monotonic() < deadline, ha.configs
            agent.silence(0.2)  # the reload happens in the audio loop, between chunks
            time.sleep(0.2)
        assert sorted(ha.removed) == gone
        assert ("device_automation", "voice_agent_den intent_LightOn") in ha.configs
        assert all(c["device"]["model"].startswith("smart-home-en ") for c in ha.configs.values())
    finally:
        status, stderr = agent.finish()
    assert status == 0, stderr
    assert "model reloaded: intents smart-home-en" in stderr
