"""Time the durable outbox on this disk and the courier against a real mosquitto.

Prints a markdown table: the raw cost of one fsync, put and ack latency (each one SQLite
commit with synchronous=FULL, i.e. one fsync of the WAL), put+ack throughput without a
network, a prune scan over a full outbox, and the courier draining a backlog through
mosquitto on the loopback (one message in flight, ack per PUBACK) plus the submit →
subscriber latency of single commands. Run it on the Pi's SD card to get the Pi's numbers:

    python bench/outbox.py --dir /var/lib/voice-agent/bench
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.actions import Message  # noqa: E402
from agent.delivery import Courier  # noqa: E402
from agent.mqtt import MqttLink, MqttSettings  # noqa: E402
from agent.outbox import Outbox, OutboxSettings  # noqa: E402

MESSAGE = Message("zigbee2mqtt/kitchen_light/set", b'{"state":"ON","brightness":200}')


def _ms(samples: list[float]) -> str:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"median {statistics.median(ordered) * 1e3:.2f} ms, p99 {p99 * 1e3:.2f} ms"


def _fsync(directory: Path, count: int) -> list[float]:
    samples = []
    fd = os.open(directory / "fsync.bin", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for _ in range(count):
            os.write(fd, bytes(4096))
            started = time.perf_counter()
            os.fsync(fd)
            samples.append(time.perf_counter() - started)
    finally:
        os.close(fd)
    return samples


def _settings(path: Path, size: int) -> OutboxSettings:
    return OutboxSettings(path, max_messages=size, max_bytes=size * 1000, expire_after=None)


def _put_ack(directory: Path, count: int) -> tuple[list[float], list[float], float]:
    puts, acks = [], []
    with Outbox(_settings(directory / "put-ack.sqlite", count)) as outbox:
        started = time.perf_counter()
        for _ in range(count):
            t = time.perf_counter()
            entry = outbox.put(MESSAGE)
            puts.append(time.perf_counter() - t)
            t = time.perf_counter()
            outbox.ack(entry.seq)
            acks.append(time.perf_counter() - t)
        rate = count / (time.perf_counter() - started)
    return puts, acks, rate


def _prune(directory: Path, size: int) -> float:
    path = directory / f"prune-{size}.sqlite"
    Outbox(_settings(path, size)).close()  # creates the schema
    # Filled in one transaction through SQLite directly: 10,000 fsynced puts take a while.
    with sqlite3.connect(path) as db:
        now = time.time()
        db.executemany(
            "INSERT INTO outbox (id, created, expire_after, topic, payload, qos, retain, size)"
            " VALUES (?, ?, 60.0, ?, ?, 1, 0, ?)",
            [(f"{n:032x}", now, MESSAGE.topic, MESSAGE.payload, 60) for n in range(size)],
        )
    db.close()
    with Outbox(_settings(path, size)) as outbox:
        started = time.perf_counter()
        runs = 20
        for _ in range(runs):
            assert outbox.prune(now) == []
        return (time.perf_counter() - started) / runs


def _courier(directory: Path, backlog: int, singles: int) -> tuple[float, list[float]]:
    from tests.agent.broker import HOST, Mosquitto, Subscriber

    broker = Mosquitto(directory / "mosquitto").start()
    try:
        outbox = Outbox(_settings(directory / "courier.sqlite", backlog))
        for n in range(backlog):
            outbox.put(Message("bench/drain", str(n).encode()))
        link = MqttLink(MqttSettings(HOST, broker.port, site_id="bench"))
        link.start()
        assert link.wait_connected(10)
        courier = Courier(outbox, link)
        with Subscriber(broker.port, "bench/#") as sub:
            started = time.perf_counter()
            courier.start()
            assert courier.wait_drained(600)
            rate = backlog / (time.perf_counter() - started)
            for _ in range(backlog):
                sub.get(10)
            latencies = []
            for n in range(singles):
                t = time.perf_counter()
                courier.submit(Message("bench/single", str(n).encode()))
                sub.get(10)
                latencies.append(time.perf_counter() - t)
        courier.stop()
        link.stop()
        outbox.close()
    finally:
        broker.stop()
    return rate, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, help="make the run's folder here (default: /tmp)")
    parser.add_argument("--count", type=int, default=500, help="puts/acks to time")
    parser.add_argument("--backlog", type=int, default=1000, help="messages to drain")
    parser.add_argument("--no-broker", action="store_true", help="skip the mosquitto part")
    args = parser.parse_args()
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    # A fresh folder per run: the files of an earlier run would change the figures.
    directory = Path(tempfile.mkdtemp(prefix="bench-outbox-", dir=args.dir))

    rows = [("fsync of a 4 KiB write", _ms(_fsync(directory, args.count)))]
    puts, acks, rate = _put_ack(directory, args.count)
    rows += [
        ("put (one commit, fsynced)", _ms(puts)),
        ("ack (one commit, fsynced)", _ms(acks)),
        ("put+ack throughput, no network", f"{rate:.0f} messages/s"),
    ]
    for size in (1000, 10_000):
        rows.append((f"prune scan, {size:,} waiting", f"{_prune(directory, size) * 1e3:.2f} ms"))
    if not args.no_broker:
        drain, latencies = _courier(directory, args.backlog, 100)
        rows += [
            (f"courier drains {args.backlog:,} via mosquitto", f"{drain:.0f} messages/s"),
            ("submit → subscriber, one command", _ms(latencies)),
        ]
    print(f"Directory: {directory}\n")
    print("| measure | result |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


if __name__ == "__main__":
    main()
