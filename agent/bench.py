"""``voice-agent bench``: measure this machine for the agent and print one markdown table.

For users on a real Pi to paste into an issue: the wake word detector's CPU per second of
audio, Vosk's real-time factor with and without the intent model's grammar, the intent
classifier's latency, the time from the end of a spoken command to the broker's
acknowledgement through the daemon, peak memory, and the CPU's temperature and throttling.
Speech is synthesized with espeak-ng and the broker is a throw-away one on the loopback
(mosquitto if installed, else amqtt), so nothing on the network or in the room is touched.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass, replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Final, TextIO

import numpy as np

from agent import __version__
from agent.audio import END_OF_STREAM, AudioChunk, Item
from agent.broker import start_broker
from agent.classifier import IntentClassifier
from agent.config import Config, find_config, load_config
from agent.daemon import Daemon
from agent.demo import LANGUAGES
from agent.errors import UsageError
from agent.recognizer import Recognizer, RecognizerSettings, Transcript, load_grammar
from agent.service import start_delivery
from agent.wakeword import WakeWordDetector, WakeWordError

__all__ = ["BenchOptions", "Row", "machine_model", "run_bench", "table", "throttling"]

CHUNK_SECONDS: Final = 0.1
"""Audio handed to the daemon at a time, as a microphone does."""
LEAD_SECONDS: Final = 0.3
TAIL_SECONDS: Final = 2.5
"""Silence after each command: enough for Vosk's longest endpoint rule (2 s)."""
SPEECH_LEVEL: Final = 0.02
"""A sample above this share of full scale is speech (espeak-ng's silence is exact zeros)."""
WAKE_WORD: Final = ("okay_nabu", "okay nabu")
WAKE_RATE: Final = 16000
THROTTLE_BITS: Final = {
    0: "under-voltage now",
    1: "frequency capped now",
    2: "throttled now",
    3: "soft temperature limit now",
    16: "under-voltage since boot",
    17: "frequency capped since boot",
    18: "throttled since boot",
    19: "soft temperature limit since boot",
}
"""``vcgencmd get_throttled``'s bits (Raspberry Pi firmware)."""


@dataclass(frozen=True)
class BenchOptions:
    config: Path | None = None
    model: Path | None = None
    """The intent model (default: the configuration's model.path)."""
    vosk_model: Path | None = None
    """The Vosk model (default: the configuration's vosk.model)."""
    quick: bool = False
    """Fewer repetitions: seconds instead of a minute (for tests and emulators)."""
    broker: str = "auto"


@dataclass(frozen=True)
class Row:
    """One line of the table."""

    name: str
    value: str
    note: str = ""


@dataclass(frozen=True)
class Speech:
    """One synthesized utterance: 16-bit mono PCM, and where its speech ends."""

    text: str
    pcm: np.ndarray
    rate: int

    @property
    def seconds(self) -> float:
        return len(self.pcm) / self.rate

    @property
    def speech_end(self) -> float:
        """Seconds from the start to the last sample louder than :data:`SPEECH_LEVEL`."""
        loud = np.flatnonzero(np.abs(self.pcm.astype(np.int32)) > SPEECH_LEVEL * 32768)
        return (int(loud[-1]) + 1) / self.rate if loud.size else 0.0


def _progress(err: TextIO, text: str) -> None:
    print(f"bench: {text}", file=err, flush=True)


# -- the machine ---------------------------------------------------------------------------


def machine_model(
    device_tree: Path = Path("/proc/device-tree/model"), cpuinfo: Path = Path("/proc/cpuinfo")
) -> str:
    """The board's name (``Raspberry Pi 4 Model B Rev 1.4``) from the device tree; elsewhere
    the architecture and the CPU's model name."""
    try:
        return device_tree.read_bytes().rstrip(b"\0").decode(errors="replace").strip()
    except OSError:
        pass
    name = ""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("model name", "Model", "Hardware") and value.strip():
                name = value.strip()
                break
    except OSError:
        pass
    return f"{platform.machine()} ({name})" if name else platform.machine()


def _os_name() -> str:
    try:
        text = Path("/etc/os-release").read_text(errors="replace")
    except OSError:
        return platform.system()
    found = re.search(r'^PRETTY_NAME="?([^"\n]*)"?$', text, re.M)
    return found.group(1) if found else platform.system()


def _package(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "?"


def _run(command: list[str]) -> str | None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except OSError:
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def _temperature() -> tuple[str, str]:
    """The CPU's temperature and where it was read."""
    if shutil.which("vcgencmd"):
        out = _run(["vcgencmd", "measure_temp"])
        found = re.search(r"([\d.]+)", out or "")
        if found:
            return f"{float(found.group(1)):.1f} °C", "vcgencmd measure_temp"
    zones = sorted(Path("/sys/class/thermal").glob("thermal_zone*"))
    # The CPU's zone where the kernel names one; else the first.
    zones.sort(key=lambda z: "cpu" not in _read(z / "type"))
    for zone in zones:
        text = _read(zone / "temp")
        if text.lstrip("-").isdigit():
            return f"{int(text) / 1000:.1f} °C", f"{zone}/temp ({_read(zone / 'type')})"
    return "n/a", "no vcgencmd, no /sys/class/thermal"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def _throttling() -> Row:
    if not shutil.which("vcgencmd"):
        return Row("throttling", "n/a", "no vcgencmd (not a Raspberry Pi OS)")
    return throttling(_run(["vcgencmd", "get_throttled"]))


def throttling(answer: str | None) -> Row:
    """The row for ``vcgencmd get_throttled``'s answer (``throttled=0x50005``), or for its
    failure (None)."""
    found = re.search(r"0x[0-9a-fA-F]+", answer or "")
    if not found:
        return Row("throttling", "n/a", "vcgencmd get_throttled failed (group video?)")
    bits = int(found.group(0), 16)
    flags = [text for bit, text in THROTTLE_BITS.items() if bits >> bit & 1]
    return Row("throttling", found.group(0), ", ".join(flags) or "none (vcgencmd get_throttled)")


# -- speech --------------------------------------------------------------------------------


def _synthesize(text: str, voice: str, path: Path) -> Speech:
    espeak = shutil.which("espeak-ng")
    assert espeak is not None
    done = subprocess.run([espeak, "-v", voice, "-w", str(path), text], capture_output=True)
    if done.returncode != 0:
        reason = done.stderr.decode(errors="replace").strip() or f"status {done.returncode}"
        raise UsageError(f"espeak-ng -v {voice} failed: {reason}")
    with wave.open(str(path), "rb") as wav:
        pcm = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
        return Speech(text, pcm, wav.getframerate())


def _resample(speech: Speech, rate: int) -> np.ndarray:
    """``speech`` at ``rate`` Hz: with soxr when installed, else linear interpolation
    (enough to measure a detector's CPU)."""
    try:
        import soxr  # type: ignore[import-untyped]

        return np.asarray(soxr.resample(speech.pcm, speech.rate, rate), dtype="<i2")
    except ImportError:
        n = round(len(speech.pcm) * rate / speech.rate)
        positions = np.linspace(0, len(speech.pcm) - 1, n)
        resampled = np.interp(positions, np.arange(len(speech.pcm)), speech.pcm)
        return np.asarray(resampled.round(), dtype="<i2")


def _chunks(pcm: np.ndarray, rate: int) -> Iterator[AudioChunk]:
    step = round(rate * CHUNK_SECONDS)
    for start in range(0, len(pcm), step):
        yield AudioChunk(pcm[start : start + step].tobytes(), rate)


# -- the measurements ----------------------------------------------------------------------


def wake_word_cpu(wake: Speech | None, seconds: float) -> Row:
    """CPU of the wake word detector per second of audio: ``seconds`` of 16 kHz audio (the
    wake word, then silence) through the agent's own detector and okay_nabu model, in
    10 ms chunks as a microphone delivers them."""
    name = "wake word CPU"
    model, said = WAKE_WORD
    try:
        detector = WakeWordDetector((model,))
    except WakeWordError as err:
        return Row(name, "n/a", f"wake word unavailable: {err}")
    pcm = np.zeros(round(seconds * WAKE_RATE), dtype="<i2")
    if wake is not None:
        spoken = _resample(wake, WAKE_RATE)[: len(pcm) - WAKE_RATE // 2]
        pcm[WAKE_RATE // 2 : WAKE_RATE // 2 + len(spoken)] = spoken
    heard = False
    step = WAKE_RATE // 100
    started = time.process_time()
    for start in range(0, len(pcm), step):
        chunk = AudioChunk(pcm[start : start + step].tobytes(), WAKE_RATE)
        heard = detector.process(chunk) is not None or heard
    cpu = time.process_time() - started
    per_second = cpu / seconds
    what = f'"{said}" heard: {"yes" if heard else "NO"}' if wake is not None else "no speech"
    note = f"{model}, pymicro-wakeword {_package('pymicro-wakeword')}, {seconds:g} s; {what}"
    return Row(name, f"{per_second * 1e3:.1f} ms per s of audio ({per_second:.1%} of a core)", note)


def vosk_rtf(recognizer: Recognizer, speech: list[Speech], mode: str) -> Row:
    """Decoding time per second of audio over ``speech``, as fast as Vosk can go."""
    transcripts: list[Transcript] = []
    for utterance in speech:
        items: list[Item] = [*_chunks(utterance.pcm, utterance.rate), END_OF_STREAM]
        transcripts.extend(recognizer.transcribe(items))
    audio = sum(t.audio_seconds for t in transcripts)
    decode = sum(t.decode_seconds for t in transcripts)
    rtf = decode / audio if audio else 0.0
    heard = "; ".join(f'"{t.text}"' for t in transcripts)
    plural = "" if len(speech) == 1 else "s"
    note = f"{len(speech)} utterance{plural}, {audio:.1f} s of audio; heard {heard}"
    return Row(f"Vosk real-time factor, {mode}", f"{rtf:.3f}", note)


def classify_latency(classifier: IntentClassifier, sentences: list[str], calls: int) -> Row:
    """Percentiles of one ``classify`` call (features, interpreter, slots) over ``calls``."""
    for sentence in sentences:  # the first calls allocate; not counted
        classifier.classify(sentence)
    times = []
    for i in range(calls):
        started = time.perf_counter()
        classifier.classify(sentences[i % len(sentences)])
        times.append(time.perf_counter() - started)
    p50, p99 = np.percentile(np.array(times) * 1e3, [50, 99])
    note = f"{calls} calls, {classifier.info.name}, {classifier.runtime}"
    return Row("classify p50 / p99", f"{p50:.2f} / {p99:.2f} ms", note)


def _paced(speech: list[Speech], ends: list[float]) -> Iterator[Item]:
    """``speech`` as a microphone delivers it: each chunk once its audio has elapsed, with
    silence around each utterance; ``ends`` gets each utterance's end of speech (a
    ``perf_counter`` time) as it is fed."""
    clock = time.perf_counter()
    fed = 0.0
    for utterance in speech:
        rate = utterance.rate
        lead = np.zeros(round(LEAD_SECONDS * rate), dtype="<i2")
        tail = np.zeros(round(TAIL_SECONDS * rate), dtype="<i2")
        ends.append(clock + fed + LEAD_SECONDS + utterance.speech_end)
        for chunk in _chunks(np.concatenate([lead, utterance.pcm, tail]), rate):
            fed += chunk.seconds
            time.sleep(max(0.0, clock + fed - time.perf_counter()))
            yield chunk
        yield END_OF_STREAM


def end_to_end(
    config: Config,
    models: tuple[Recognizer, IntentClassifier],
    speech: list[Speech],
    broker: str,
    err: TextIO,
) -> list[Row]:
    """End of speech -> every message acknowledged, through the daemon (on the models
    already loaded), the outbox and a broker on the loopback, with the audio fed in real
    time."""
    with ExitStack() as stack:
        embedded = stack.enter_context(start_broker(broker))
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="voice-agent-bench-")))
        local = load_config(
            None,
            {
                "model.path": config.model.path,
                "vosk.model": config.vosk.model,
                "audio.source": "wav",
                "audio.wav": work,
                "mqtt.host": embedded.host,
                "mqtt.port": embedded.port,
                "mqtt.site_id": "bench",
                # amqtt speaks only MQTT 3.1.1; mosquitto (and the agent's default) speak 5.
                "mqtt.protocol": "3.1.1" if embedded.kind == "amqtt" else "5",
                "outbox.path": work / "outbox.sqlite",
                "log.level": "warning",
            },
            environ={},
        )
        config = replace(local, model=config.model, vosk=config.vosk)
        _, link, courier = start_delivery(config, stack)
        recognizer, classifier = models
        daemon = Daemon(
            recognizer,
            classifier,
            courier,
            site_id=config.mqtt.site_id,
            decision=config.vosk.decision,
        )
        if not link.wait_connected(10):
            raise UsageError(f"the embedded {embedded.kind} did not accept the connection")
        _progress(err, f"speaking {len(speech)} commands in real time through the daemon")
        ends: list[float] = []
        latencies: list[float] = []
        endpoints: list[float] = []
        accepted = 0
        for outcome in daemon.listen(_paced(speech, ends)):
            now = time.perf_counter()
            if outcome.decision.accepted:
                accepted += 1
            if outcome.decision.accepted and outcome.complete and ends:
                latencies.append(now - ends[-1])
                endpoints.append(outcome.decision.transcript.trailing_seconds)
        broker_name = f"{embedded.kind} {_package('amqtt') if embedded.kind == 'amqtt' else ''}"
    commands = f"{accepted} of {len(speech)} utterances were commands"
    if not latencies:
        return [Row("end of speech → acknowledged", "n/a", f"{commands}; none acknowledged")]
    p50 = statistics.median(latencies) * 1e3
    worst = max(latencies) * 1e3
    note = (
        f"{commands}; outbox + {broker_name.strip()} on 127.0.0.1; of which the endpoint's"
        f" silence p50 {statistics.median(endpoints):.2f} s"
    )
    return [Row("end of speech → acknowledged p50 / max", f"{p50:.0f} / {worst:.0f} ms", note)]


# -- the whole run -------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    """``rows`` as one markdown table (pipes in values escaped)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| measure | value | notes |", "|---|---|---|"]
    lines += [f"| {cell(r.name)} | {cell(r.value)} | {cell(r.note)} |" for r in rows]
    return "\n".join(lines)


def _config(options: BenchOptions) -> Config:
    overrides: dict[str, object] = {}
    if options.model is not None:
        overrides["model.path"] = options.model
    if options.vosk_model is not None:
        overrides["vosk.model"] = options.vosk_model
    return load_config(find_config(options.config), overrides, os.environ)


def run_bench(options: BenchOptions, out: TextIO = sys.stdout, err: TextIO = sys.stderr) -> int:
    """Measure, then print the table on ``out`` (progress on ``err``); 0 when it printed."""
    config = _config(options)
    temperature, where = _temperature()
    rows = [
        Row("machine", machine_model()),
        Row("system", f"{_os_name()}, {platform.machine()}, Python {platform.python_version()}"),
        Row(
            "voice-agent",
            __version__,
            f"numpy {_package('numpy')}, vosk {_package('vosk')},"
            f" tflite-runtime {_package('tflite-runtime')}",
        ),
        Row("CPU temperature before", temperature, where),
    ]
    _progress(err, f"loading the intent model {config.model.path}")
    model = config.model
    classifier = IntentClassifier.load(model.path, model.runtime, model.threads)
    language = LANGUAGES.get(classifier.info.language)
    grammar = load_grammar(config.model.path)
    phrases = list(language.phrases) if language else list(grammar[:4])
    voice = language.voice if language else classifier.info.language or "en"

    espeak = shutil.which("espeak-ng") is not None
    speech: list[Speech] = []
    wake: Speech | None = None
    with tempfile.TemporaryDirectory(prefix="voice-agent-bench-") as scratch:
        if espeak:
            _progress(err, f"synthesizing {len(phrases)} phrases with espeak-ng -v {voice}")
            folder = Path(scratch)
            speech = [_synthesize(p, voice, folder / f"{i}.wav") for i, p in enumerate(phrases)]
            wake = _synthesize(WAKE_WORD[1], "en", folder / "wake.wav")
        else:
            print(
                "bench: espeak-ng is not installed (apt-get install espeak-ng): no speech, so"
                " Vosk and the end-to-end rows are skipped and the wake word hears silence",
                file=err,
            )
    if options.quick:
        speech = speech[:2]
    _progress(err, "the wake word detector")
    rows.append(wake_word_cpu(wake, 5.0 if options.quick else 30.0))

    _progress(err, f"loading the Vosk model {config.vosk.model}")
    settings = RecognizerSettings(
        model_dir=config.vosk.model,
        grammar=grammar,
        decoder=config.vosk.decoder,
        sentence_pause=config.vosk.sentence_pause,
    )
    recognizer = Recognizer(settings)
    rows.append(Row("Vosk model load", f"{recognizer.load_seconds:.1f} s", str(config.vosk.model)))
    if speech:
        _progress(err, "Vosk with the grammar, then open vocabulary")
        rows.append(vosk_rtf(recognizer, speech, "grammar"))
        # Open vocabulary decodes several times slower: --quick gives it one utterance.
        opened = speech[:1] if options.quick else speech
        rows.append(vosk_rtf(recognizer.with_grammar(None), opened, "open"))
    else:
        rows.append(Row("Vosk real-time factor", "skipped", "no speech (espeak-ng not installed)"))
    _progress(err, "classify")
    sentences = phrases + [" ".join(grammar[i : i + 3]) for i in range(0, len(grammar), 3)]
    rows.append(classify_latency(classifier, sentences, 200 if options.quick else 2000))
    if speech:
        rows.extend(end_to_end(config, (recognizer, classifier), speech, options.broker, err))
    else:
        rows.append(Row("end of speech → acknowledged", "skipped", "no speech (no espeak-ng)"))

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows.append(Row("peak RSS", f"{peak:.0f} MB", "this process: both models, the wake word"))
    temperature, where = _temperature()
    rows.append(Row("CPU temperature after", temperature, where))
    rows.append(_throttling())
    print(table(rows), file=out)
    return 0
