"""Delivery under hostile conditions, in figures: late replays, lost PUBACKs, a poison
message, a full disk, two agents on one broker.

The real outbox (SQLite), ``MqttLink`` and ``Courier`` against a real mosquitto on a free
loopback port, with a TCP proxy (tests/agent/proxy.py) between them to cut the link one
way or both; an MQTT 5 subscriber on the broker itself sees every copy with its outbox id.
Prints one markdown table, a row per scenario:

- **late replay**: ``-n`` commands sent while the agent->broker leg is cut, then the whole
  link down past ``outbox.expire_after``: copies delivered after their expiry (target 0);
- **lost PUBACK**: ``-n`` commands whose PUBACK the proxy swallows: copies of each after
  its acknowledgement (target 0; one repeat *before* it, same id, is at-least-once);
- **poison**: one 803-byte message to a broker with ``max_packet_size 600`` followed by
  ``-n`` commands: whether it stalled delivery, seconds until the rest flowed (MQTT 5,
  where mosquitto announces its limit, and 3.1.1, where it just drops the connection);
- **disk full**: ``-n`` commands stored, the outbox's filesystem (a 512 KiB tmpfs; needs
  root) filled, then the broker reachable: copies per id while the deletes fail (target 1);
- **two agents**: two links with the same site id on one broker, client ids derived on two
  machines, for ``--minutes`` (target 0 disconnects); and for contrast the same client id.

    python bench/hostile.py                   # 20 commands per scenario, 10 minutes of two agents
    python bench/hostile.py --minutes 0.5     # a quick run

``tests/agent/test_hostile_delivery.py`` runs the same scenarios and asserts on them.
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.actions import Message  # noqa: E402
from agent.delivery import Courier  # noqa: E402
from agent.mqtt import MqttLink, MqttSettings, Protocol, machine_tag  # noqa: E402
from agent.outbox import Outbox, OutboxSettings  # noqa: E402
from tests.agent.broker import HOST, Mosquitto, Subscriber, wait_until  # noqa: E402
from tests.agent.disk import NoSmallDisk, fill, small_filesystem  # noqa: E402
from tests.agent.proxy import Proxy  # noqa: E402

FAST = {"reconnect_min": 0.1, "reconnect_max": 0.3}


def start(outbox: Outbox, port: int, site: str, protocol: Protocol = "5") -> Courier:
    link = MqttLink(MqttSettings(HOST, port, site_id=site, protocol=protocol, **FAST))
    courier = Courier(outbox, link, retry_delay=0.1, publish_timeout=1.0)
    link.start()
    courier.start()
    return courier


def stop(courier: Courier) -> None:
    courier.stop()
    courier.link.stop()
    courier.outbox.close()


def ids(sub: Subscriber, seconds: float) -> list[str]:
    """The outbox id of everything that arrives within ``seconds``."""
    return [Subscriber.user_properties(m).get("id", "") for m in sub.drain(seconds)]


def late_replay(broker: Mosquitto, work: Path, n: int) -> str:
    outbox = Outbox(OutboxSettings(work / "late.sqlite", expire_after=2.0))
    with Proxy(broker.port) as proxy, Subscriber(broker.port, "late/#", mqtt5=True) as sub:
        courier = start(outbox, proxy.port, "late")
        try:
            assert courier.link.wait_connected(10)
            proxy.upstream = False
            entries = [courier.submit(Message(f"late/{i}", b"ON")) for i in range(n)]
            time.sleep(0.5)
            proxy.accepting = False
            proxy.cut()
            time.sleep(2.5)
            proxy.upstream = proxy.accepting = True
            got = ids(sub, 5.0)  # all of it after the commands' expiry
        finally:
            stop(courier)
    late = sum(id_ in {e.id for e in entries} for id_ in got)
    return (
        f"| late replay: {n} commands expire while the link is down | {late} delivered after"
        f" expiry (target 0), {len(got)} in all |"
    )


def lost_puback(broker: Mosquitto, work: Path, n: int) -> str:
    outbox = Outbox(OutboxSettings(work / "puback.sqlite"))
    after_ack = before_ack = 0
    with Proxy(broker.port) as proxy, Subscriber(broker.port, "puback/#", mqtt5=True) as sub:
        courier = start(outbox, proxy.port, "puback")
        try:
            assert courier.link.wait_connected(10)
            for i in range(n):
                proxy.downstream = False
                entry = courier.submit(Message(f"puback/{i}", b"ON"))
                wait_until(lambda: proxy.swallowed > 0, 5)
                proxy.swallowed = 0
                proxy.downstream = True
                wait_until(lambda: outbox.depth == 0, 10)
                # What is queued at the subscriber arrived by the acknowledgement (a
                # loopback broker forwards before it acknowledges); then a second more.
                by_ack = Counter(ids(sub, 0.05))[entry.id]
                before_ack += max(0, by_ack - 1)
                after_ack += Counter(ids(sub, 1.0))[entry.id]
        finally:
            stop(courier)
    return (
        f"| lost PUBACK: {n} commands, the PUBACK swallowed | {after_ack} copies after the"
        f" acknowledgement (target 0); {before_ack} repeat(s) before it, same id |"
    )


def poison(work: Path, n: int, protocol: Protocol) -> str:
    broker = Mosquitto(work / f"small-{protocol}", extra=("max_packet_size 600",)).start()
    outbox = Outbox(OutboxSettings(work / f"poison-{protocol}.sqlite"))
    try:
        with Subscriber(broker.port, "poison/#", mqtt5=True) as sub:
            courier = start(outbox, broker.port, "poison", protocol)
            try:
                assert courier.link.wait_connected(10)
                started = time.monotonic()
                courier.submit(Message("poison/intent", b"x" * 803))
                for i in range(n):
                    courier.submit(Message(f"poison/{i}", b"ON"))
                got = 0
                while got < n and time.monotonic() - started < 30:
                    got += len(sub.drain(0.2))
                flowed = time.monotonic() - started
                aside = courier.set_aside
            finally:
                stop(courier)
    finally:
        broker.stop()
    stalled = "never" if got == n else f"YES ({got} of {n})"
    return (
        f"| poison: 803 bytes to max_packet_size 600, MQTT {protocol}, {n} behind it |"
        f" stalled {stalled}; the rest flowed within {flowed:.1f} s; {aside} set aside |"
    )


def disk_full(broker: Mosquitto, work: Path, n: int) -> str:
    try:
        with small_filesystem(work / "small") as mount:
            outbox = Outbox(OutboxSettings(mount / "outbox.sqlite", min_free=64 * 1024))
            entries = [outbox.put(Message(f"full/{i}", b"ON")) for i in range(n)]
            fill(mount)
            with Subscriber(broker.port, "full/#", mqtt5=True) as sub:
                courier = start(outbox, broker.port, "full")
                try:
                    got = Counter(ids(sub, 5.0))
                    refused = not courier.publish(Message("full/new", b"ON"))
                    problem = courier.disk_problem
                finally:
                    stop(courier)
    except NoSmallDisk as err:
        return f"| disk full | not measured: {err} |"
    resends = sum(max(0, got[e.id] - 1) for e in entries)
    missing = sum(got[e.id] == 0 for e in entries)
    return (
        f"| disk full: {n} stored, then the filesystem filled | {resends} resends in 5 s"
        f" (target 0), {missing} missing; new command refused: {'yes' if refused else 'NO'};"
        f" status says: {problem or 'nothing'} |"
    )


def two_agents(broker: Mosquitto, work: Path, minutes: float, same_id: bool) -> str:
    ids = []
    for name in ("pi-a", "pi-b"):
        (work / name).write_text(name + "-machine-id\n")
        ids.append(f"voice-agent-kitchen-{machine_tag(work / name)}")
    if same_id:
        ids = ["voice-agent-kitchen"] * 2  # what the old default gave every Pi
    links = [
        MqttLink(MqttSettings(HOST, broker.port, site_id="kitchen", client_id=i, **FAST))
        for i in ids
    ]
    for link in links:
        link.start()
    try:
        time.sleep(minutes * 60)
        drops = sum(max(0, link.connects - 1) for link in links)
    finally:
        for link in links:
            link.stop()
    what = "one client id (the old default)" if same_id else "ids derived on two machines"
    return (
        f"| two agents, site id kitchen, {what}, {minutes:g} min | {drops} disconnects"
        f"{' (target 0)' if not same_id else ''} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="commands per scenario")
    parser.add_argument("--minutes", type=float, default=10.0, help="two agents: minutes")
    parser.add_argument("--contrast", type=float, default=0.5, help="one client id: minutes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    rows = []
    with tempfile.TemporaryDirectory(prefix="voice-agent-hostile-") as scratch:
        work = Path(scratch)
        broker = Mosquitto(work / "broker").start()
        try:
            rows.append(late_replay(broker, work, args.n))
            rows.append(lost_puback(broker, work, args.n))
            rows.append(poison(work, args.n, "5"))
            rows.append(poison(work, args.n, "3.1.1"))
            rows.append(disk_full(broker, work, args.n))
            rows.append(two_agents(broker, work, args.contrast, same_id=True))
            rows.append(two_agents(broker, work, args.minutes, same_id=False))
        finally:
            broker.stop()
    print("| scenario | measured |\n|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
