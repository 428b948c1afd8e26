"""Fuzz the parsers with thousands of hostile inputs and count what happened.

The same strategies as the suite's fuzz tests (tests/fuzzing.py), with many more examples
and no shrinking: intent specs (``convert.spec.load_spec``), the topics, slot values and
payloads of a spec's actions (accepted ones must render valid topics for every value),
model directories (the Korean model with its model.json, grammar.json and intent.tflite
edited, loaded as the daemon loads them and, when accepted, run on a few sentences),
configuration files (``agent.config.load_config``), WAV files (``agent.audio.wav_source``)
and raw PCM on stdin (``agent.audio.stdin_source``); every audio input that decodes is fed
to the real Korean Vosk model. Prints a markdown table; any crash (an exception other than
the documented one-line error) is counted and the first one of each parser printed below
the table:

    python bench/fuzz.py --examples 5000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.fuzzing import (  # noqa: E402
    Outcome,
    Tally,
    check_config,
    check_model,
    check_spec,
    check_spec_topics,
    check_stdin,
    check_wav,
    config_inputs,
    model_plans,
    recognize,
    run_strategy,
    spec_inputs,
    spec_topic_inputs,
    stdin_plans,
    wav_inputs,
)

PARSERS = ("spec", "topics", "model", "config", "wav", "stdin")


def _recognizer() -> Any:
    from agent.recognizer import Recognizer, RecognizerSettings, load_grammar, packaged_model_dir

    grammar = load_grammar(ROOT / "models/smart-home-ko")
    return Recognizer(RecognizerSettings(packaged_model_dir(), grammar))


def _checks(scratch: Path, vosk: bool) -> dict[str, tuple[Any, Callable[[Any], Outcome]]]:
    recognizer = _recognizer() if vosk else None

    def audio(result: Any) -> Outcome:
        if recognizer is not None and result.outcome == "accepted":
            recognize(recognizer, result.items)
        return result.outcome  # type: ignore[no-any-return]

    return {
        "spec": (spec_inputs, lambda data: check_spec(scratch / "spec.yaml", data)),
        "topics": (spec_topic_inputs, lambda data: check_spec_topics(scratch / "t.yaml", data)),
        "model": (model_plans, lambda plan: check_model(scratch / "model", plan)),
        "config": (config_inputs(), lambda case: check_config(scratch / "config.toml", *case)),
        "wav": (wav_inputs(), lambda data: audio(check_wav(scratch / "audio.wav", data))),
        "stdin": (stdin_plans, lambda plan: audio(check_stdin(plan))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=5000, help="inputs per parser")
    parser.add_argument("--seed", type=int, default=0, help="reproduces a run")
    parser.add_argument("--only", choices=PARSERS, action="append", help="parsers to run")
    parser.add_argument("--no-vosk", action="store_true", help="do not decode the audio")
    args = parser.parse_args(argv)
    memory = Path("/dev/shm")
    rows: list[tuple[str, Tally, float]] = []
    with tempfile.TemporaryDirectory(dir=memory if memory.is_dir() else None) as folder:
        checks = _checks(Path(folder), vosk=not args.no_vosk)
        for name in args.only or PARSERS:
            strategy, check = checks[name]
            started = time.perf_counter()
            tally = run_strategy(strategy, args.examples, args.seed, check)
            rows.append((name, tally, time.perf_counter() - started))
            print(f"{name}: {tally}", file=sys.stderr)
    print("| parser | inputs tried | accepted | refused with the one-line error | crashes | s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, tally, seconds in rows:
        print(
            f"| {name} | {tally.tried} | {tally.accepted} | {tally.refused} | {tally.crashes}"
            f" | {seconds:.0f} |"
        )
    for name, tally, _ in rows:
        if tally.crashes:
            print(f"\nfirst crash of {name}: {tally.first_crash}")
    assert "tensorflow" not in sys.modules, "the fuzzing imported TensorFlow"
    return 1 if any(tally.crashes for _, tally, _ in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
