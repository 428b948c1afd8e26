"""Text commands over MQTT (``hermes/nlu/query``) with a real mosquitto, the Korean intent model
and the real TFLite interpreter: a query published by another client comes back as the
Hermes intent and the device action, with its ids echoed; bad, oversized and foreign-site
queries publish nothing and leave one line in the log."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent.classifier import IntentClassifier
from agent.cli import main
from agent.config import QueryConfig, load_config
from agent.daemon import Daemon
from agent.mqtt import MAX_INBOUND_PACKET, MqttLink, MqttSettings
from agent.query import MAX_INPUT_CHARS, BadQuery, QueryListener, parse_query, start_query
from agent.recognizer import Recognizer, RecognizerSettings, packaged_model_dir
from tests.agent.broker import HOST, Mosquitto, Subscriber

ROOT = Path(__file__).resolve().parents[2]
KO_MODEL = ROOT / "models" / "smart-home-ko"
SITE = "kitchen-pi"
LIGHT_ON = "부엌 조명 좀 켜줘"
WEATHER = "오늘 날씨 어때"


@pytest.fixture(scope="module")
def agent(broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[QueryListener]:
    """The daemon's query path as ``voice-agent run`` wires it, from a configuration file."""
    folder = tmp_path_factory.mktemp("query")
    config_file = folder / "config.toml"
    config_file.write_text(
        f'[model]\npath = "{KO_MODEL}"\n'
        f'[vosk]\nmodel = "{packaged_model_dir()}"\n'
        f'[mqtt]\nhost = "{HOST}"\nport = {broker.port}\nsite_id = "{SITE}"\n'
        "[query]\nenabled = true\nmax_bytes = 256\n"
    )
    config = load_config(config_file, environ={})
    classifier = IntentClassifier.load(config.model.path)
    recognizer = Recognizer(RecognizerSettings(config.vosk.model, None))
    with ExitStack() as stack:
        link = MqttLink(config.mqtt)
        daemon = Daemon(recognizer, classifier, link, site_id=SITE)
        listener = start_query(config, link, daemon, stack)
        assert listener is not None
        link.start()
        stack.callback(link.stop)
        assert link.wait_connected(10)
        yield listener


@pytest.fixture
def subscriber(broker: Mosquitto) -> Iterator[Subscriber]:
    # Everything the agent could say (hermes/asr too: a text command has no textCaptured),
    # but not the queries themselves.
    topics = ("hermes/intent/#", "hermes/nlu/intentNotRecognized", "hermes/asr/#")
    with Subscriber(broker.port, (*topics, "zigbee2mqtt/#", "voice-agent/media/#")) as sub:
        yield sub


def send(broker: Mosquitto, payload: bytes | dict[str, object]) -> None:
    """Publish one query as another MQTT client would (QoS 1, acknowledged)."""
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    client = paho.Client(CallbackAPIVersion.VERSION2)
    client.connect(HOST, broker.port)
    client.loop_start()
    try:
        client.publish("hermes/nlu/query", data, qos=1).wait_for_publish(5)
    finally:
        client.disconnect()
        client.loop_stop()


def test_a_query_becomes_an_intent_and_a_device_action_with_its_ids_echoed(
    agent: QueryListener, broker: Mosquitto, subscriber: Subscriber
) -> None:
    send(broker, {"input": LIGHT_ON, "id": "req-1", "sessionId": "sess-1", "siteId": SITE})
    topic, body = subscriber.json()
    assert topic == "hermes/intent/LightOn"  # no textCaptured: nothing was spoken
    assert isinstance(body, dict)
    assert (body["id"], body["sessionId"], body["siteId"]) == ("req-1", "sess-1", SITE)
    assert body["input"] == LIGHT_ON
    assert body["intent"]["intentName"] == "LightOn"
    assert [(s["slotName"], s["value"]["value"]) for s in body["slots"]] == [("room", "kitchen")]
    action = subscriber.get()
    assert (action.topic, json.loads(action.payload)) == (
        "zigbee2mqtt/kitchen_light/set",
        {"state": "ON"},
    )


def test_without_ids_the_answer_has_fresh_ones(
    agent: QueryListener, broker: Mosquitto, subscriber: Subscriber
) -> None:
    send(broker, {"input": f"  {LIGHT_ON} "})
    topic, body = subscriber.json()
    assert topic == "hermes/intent/LightOn"
    assert isinstance(body, dict)
    assert body["siteId"] == SITE
    assert len(body["sessionId"]) == 32 and body["id"] == body["sessionId"]
    assert body["input"] == LIGHT_ON


def test_out_of_scope_text_is_not_recognized_with_its_ids(
    agent: QueryListener, broker: Mosquitto, subscriber: Subscriber
) -> None:
    send(broker, {"input": WEATHER, "id": "req-2", "sessionId": "sess-2"})
    topic, body = subscriber.json()
    assert topic == "hermes/nlu/intentNotRecognized"
    assert body == {
        "input": WEATHER,
        "siteId": SITE,
        "id": "req-2",
        "customData": None,
        "sessionId": "sess-2",
    }


def test_intent_filter_restricts_what_is_accepted(
    agent: QueryListener, broker: Mosquitto, subscriber: Subscriber
) -> None:
    send(broker, {"input": LIGHT_ON, "id": "f-1", "intentFilter": ["MusicStop", "MusicPlay"]})
    topic, body = subscriber.json()
    assert topic == "hermes/nlu/intentNotRecognized"
    assert isinstance(body, dict) and body["id"] == "f-1"
    send(broker, {"input": LIGHT_ON, "id": "f-2", "intentFilter": ["LightOn"]})
    topic, body = subscriber.json()
    assert topic == "hermes/intent/LightOn"
    assert isinstance(body, dict) and body["id"] == "f-2"
    # Its device action too: left in flight, it would be the next test's first message.
    assert subscriber.get().topic == "zigbee2mqtt/kitchen_light/set"


@pytest.mark.parametrize(
    ("payload", "cause"),
    [
        (
            json.dumps({"input": "x" * 300}).encode(),
            "payload is 313 bytes (query.max_bytes is 256)",
        ),
        (b"turn on the light", "payload is not JSON (Expecting value)"),
        (b"\xff\xfe", "payload is not UTF-8"),
        (b'["input"]', "payload must be a JSON object, got list"),
        (b'{"text": "hello"}', "'input' must be a non-empty string"),
        (b'{"input": "   "}', "'input' must be a non-empty string"),
        (b'{"input": "a", "id": 5}', "'id' must be a string, got int"),
        (
            b'{"input": "a", "intentFilter": "LightOn"}',
            "'intentFilter' must be a list of intent names",
        ),
        # JSON's escapes make lone surrogates, which no answer, log or outbox can hold.
        (b'{"input": "\\ud800 light"}', "'input' holds a lone surrogate (\\ud800)"),
        (b'{"input": "a", "id": "x\\udcff"}', "'id' holds a lone surrogate (\\udcff)"),
    ],
)
def test_a_bad_query_publishes_nothing_and_logs_one_line(
    agent: QueryListener,
    broker: Mosquitto,
    subscriber: Subscriber,
    caplog: pytest.LogCaptureFixture,
    payload: bytes,
    cause: str,
) -> None:
    handled = agent.handled
    with caplog.at_level(logging.WARNING, logger="agent"):
        send(broker, payload)
        # A good query after it: its answer must be the first thing anyone hears.
        send(broker, {"input": WEATHER, "id": "after"})
        topic, body = subscriber.json()
    assert topic == "hermes/nlu/intentNotRecognized"
    assert isinstance(body, dict) and body["id"] == "after"
    assert agent.handled == handled + 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [f"hermes/nlu/query: dropped: {cause}"]


def test_a_query_for_another_site_is_ignored(
    agent: QueryListener,
    broker: Mosquitto,
    subscriber: Subscriber,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.DEBUG, logger="agent.query"):
        send(broker, {"input": LIGHT_ON, "siteId": "bedroom-pi", "id": "elsewhere"})
        send(broker, {"input": WEATHER, "siteId": SITE, "id": "here"})
        topic, body = subscriber.json()
    assert topic == "hermes/nlu/intentNotRecognized"
    assert isinstance(body, dict) and body["id"] == "here"
    assert "hermes/nlu/query: ignored: for site 'bedroom-pi'" in caplog.messages
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_parse_query_reads_the_hermes_fields() -> None:
    query = parse_query(
        json.dumps(
            {
                "input": "turn  on the\tlight",
                "intentFilter": ["LightOn"],
                "id": "i",
                "sessionId": "s",
                "siteId": "default",
                "lang": "en",
                "wakewordId": None,
            }
        ).encode(),
        4096,
    )
    assert query.input == "turn on the light"
    assert query.site_id == "default"
    assert (query.request.id, query.request.session_id) == ("i", "s")
    assert query.request.intent_filter == ("LightOn",)
    assert parse_query(b'{"input": "a", "intentFilter": null}', 64).request.intent_filter is None
    with pytest.raises(BadQuery, match=f"at most {MAX_INPUT_CHARS}"):
        parse_query(json.dumps({"input": "a" * (MAX_INPUT_CHARS + 1)}).encode(), 4096)
    with pytest.raises(BadQuery, match="nested too deeply"):
        parse_query(b"[" * 100_000, 200_000)


def test_text_commands_are_off_unless_enabled(tmp_path: Path) -> None:
    config = load_config(None, {"model.path": str(KO_MODEL)}, environ={})
    assert not config.query.enabled
    assert (config.query.topic, config.query.max_bytes) == ("hermes/nlu/query", 4096)
    with ExitStack() as stack:
        # Neither the daemon nor the link is touched when the feature is off.
        assert start_query(config, None, None, stack) is None  # type: ignore[arg-type]


def test_the_node_red_example_flow_consumes_intents_and_sends_text_commands() -> None:
    """examples/node-red/flow.json is an importable flow wired to what the agent publishes."""
    nodes = json.loads((ROOT / "examples" / "node-red" / "flow.json").read_text(encoding="utf-8"))
    by_id = {node["id"]: node for node in nodes}
    assert len(by_id) == len(nodes), "node ids must be unique"
    (tab,) = [n for n in nodes if n["type"] == "tab"]
    (broker_node,) = [n for n in nodes if n["type"] == "mqtt-broker"]
    for node in nodes:
        if node["type"] not in ("tab", "mqtt-broker"):
            assert node["z"] == tab["id"], node["id"]
            for output in node["wires"]:
                assert all(target in by_id for target in output), node["id"]
        if node["type"] in ("mqtt in", "mqtt out"):
            assert node["broker"] == broker_node["id"]
    inputs = {n["topic"]: n for n in nodes if n["type"] == "mqtt in"}
    assert set(inputs) == {"hermes/intent/#", "hermes/nlu/intentNotRecognized"}
    # hermes/intent/# -> json -> switch on the intent name, one output per rule.
    (parse,) = inputs["hermes/intent/#"]["wires"][0]
    assert by_id[parse]["type"] == "json"
    (switch_id,) = by_id[parse]["wires"][0]
    switch = by_id[switch_id]
    assert switch["type"] == "switch"
    assert switch["property"] == "payload.intent.intentName"
    assert switch["outputs"] == len(switch["rules"]) == len(switch["wires"])
    labels = json.loads((ROOT / "models" / "smart-home-en" / "model.json").read_text())["labels"]
    named = [rule["v"] for rule in switch["rules"] if rule["t"] == "eq"]
    assert named and set(named) <= set(labels), "the switch names intents of the English model"
    # The inject node's text command is a valid NluQuery for our parser.
    (query_out,) = [n for n in nodes if n["type"] == "mqtt out"]
    assert query_out["topic"] == "hermes/nlu/query"
    (inject,) = [n for n in nodes if any(query_out["id"] in o for o in n.get("wires", []))]
    assert parse_query(inject["payload"].encode(), 4096).input == "turn on the kitchen light"


def _listening(
    agent: QueryListener, config: QueryConfig, settings: MqttSettings, stack: ExitStack
) -> tuple[MqttLink, QueryListener]:
    """A query listener of its own (the agent's models) on a link of its own, connected."""
    link = MqttLink(settings)
    daemon = Daemon(agent.daemon.recognizer, agent.daemon.classifier, link, site_id=SITE)
    listener = QueryListener(daemon, config)
    listener.start()
    stack.callback(listener.stop)
    link.subscribe(config.topic, 1, listener.receive)
    link.start()
    stack.callback(link.stop)
    assert link.wait_connected(10)
    return link, listener


def test_the_subscription_survives_a_broker_restart(agent: QueryListener, tmp_path: Path) -> None:
    # A broker of its own, restarted on the same port: the session is clean, so only a
    # subscribe on every reconnect keeps text commands working.
    own = Mosquitto(tmp_path / "mosquitto").start()
    config = QueryConfig(enabled=True)
    with ExitStack() as stack:
        stack.callback(own.stop)
        settings = MqttSettings(HOST, own.port, client_id="test-query-restart", reconnect_min=0.1)
        link, _ = _listening(agent, config, settings, stack)
        own.stop()
        own.start()
        deadline = time.monotonic() + 20
        while not link.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        assert link.connected
        with Subscriber(own.port, "hermes/intent/#") as sub:
            send(own, {"input": LIGHT_ON, "id": "after-restart"})
            topic, body = sub.json(timeout=10)
    assert topic == "hermes/intent/LightOn"
    assert isinstance(body, dict) and body["id"] == "after-restart"


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        (
            'topic = "hermes/#"',
            'query.topic: expected an MQTT topic, got "hermes/#", which holds the MQTT'
            " wildcard '#' (not allowed in a published topic)",
        ),
        ("max_bytes = 10", "query.max_bytes: expected an integer from 64 to 65536, got 10"),
        ('enabled = "yes"', 'query.enabled: expected true or false, got "yes"'),
        ("topc = 1", "unknown key 'query.topc' (did you mean 'query.topic'?)"),
    ],
)
def test_a_bad_query_setting_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], section: str, problem: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[model]\npath = "{KO_MODEL}"\n[query]\n{section}\n')
    assert main(["run", "--config", str(config)]) == 2
    captured = capsys.readouterr()
    assert (captured.out, captured.err) == ("", f"voice-agent: error: {config}: {problem}\n")


def test_a_payload_over_the_packet_limit_never_reaches_the_daemon(
    agent: QueryListener,
    broker: Mosquitto,
    subscriber: Subscriber,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """MQTT 5's Maximum Packet Size: mosquitto drops the huge message instead of sending it,
    so the daemon neither holds it in memory nor logs it; the next query is answered."""
    handled = agent.handled
    with caplog.at_level(logging.DEBUG, logger="agent"):
        send(broker, b"x" * (MAX_INBOUND_PACKET + 1))
        send(broker, {"input": WEATHER, "id": "after-huge"})
        topic, body = subscriber.json()
    assert topic == "hermes/nlu/intentNotRecognized"
    assert isinstance(body, dict) and body["id"] == "after-huge"
    assert agent.handled == handled + 1
    assert not [m for m in caplog.messages if "dropped" in m]


def test_a_burst_of_bad_text_commands_leaves_a_few_lines(
    agent: QueryListener, broker: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """5,000 bad queries as fast as a client can publish them: each is dropped, but the
    log gets the first few and one line about the rest, not thousands."""
    config = QueryConfig(enabled=True, topic="test/flood/query")
    count = 5000
    with ExitStack() as stack, caplog.at_level(logging.WARNING, logger="agent.query"):
        settings = MqttSettings(HOST, broker.port, client_id="test-query-flood")
        _, listener = _listening(agent, config, settings, stack)
        client = paho.Client(CallbackAPIVersion.VERSION2)
        client.max_queued_messages_set(0)
        client.connect(HOST, broker.port)
        client.loop_start()
        try:
            infos = [client.publish(config.topic, b'{"input": 5}', qos=1) for _ in range(count)]
            for info in infos:
                info.wait_for_publish(10)
        finally:
            client.disconnect()
            client.loop_stop()
        limiter = listener.warnings
        # The broker may drop some for a subscriber that falls behind (its queue limit):
        # wait until nothing more arrives.
        deadline = time.monotonic() + 30
        seen, still = -1, 0.0
        while time.monotonic() < deadline and still < 3.0:
            logged = len([m for m in caplog.messages if m.startswith(config.topic)])
            total = logged + limiter.suppressed
            still = still + 0.05 if total == seen else 0.0
            seen = total
            time.sleep(0.05)
    # mosquitto queues at most 1,000 messages for a subscriber that lags (max_queued_messages).
    assert seen >= 500, f"only {seen} of {count} queries reached the agent"
    ours = [m for m in caplog.messages if m.startswith((config.topic, "more than"))]
    assert logged == limiter.burst, ours[limiter.burst :]
    assert ours[limiter.burst :] == [
        "more than 20 warnings in 60 s: counting the rest, not logging them"
    ]
