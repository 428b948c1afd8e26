"""The ``voice-agent`` command line: one program, one subcommand per job.

Subcommands that need the workstation's packages (``convert`` needs TensorFlow) are
plugged in through the ``voice_agent.commands`` entry point group, so that this module,
which also runs on the Pi, never imports them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from agent import __version__
from agent.errors import UsageError
from agent.metadata import ModelError
from agent.tflite import RUNTIMES, RuntimeUnavailable


def _classify(args: argparse.Namespace) -> int:
    from agent.classifier import IntentClassifier

    classifier = IntentClassifier.load(args.model, runtime=args.runtime)
    sentences = list(args.sentence)
    if sentences == ["-"]:
        sentences = [line.strip() for line in sys.stdin if line.strip()]
    for sentence in sentences:
        result = classifier.classify(sentence)
        document = {
            "input": result.text,
            "intent": result.intent,
            "confidence": round(result.confidence, 4),
            "slots": [
                {
                    "slot": s.name,
                    "value": s.value,
                    "raw": s.raw,
                    "start": s.start,
                    "end": s.end,
                }
                for s in result.slots
            ],
        }
        if result.intent is None:
            document["rejected"] = result.reason
            document["best"] = result.label
        print(json.dumps(document, ensure_ascii=False))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-agent",
        description="Offline voice commands for the Raspberry Pi: speech -> Vosk -> int8 intent"
        " model -> MQTT.",
    )
    parser.add_argument("--version", action="version", version=f"voice-agent {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    classify = commands.add_parser(
        "classify",
        help="classify sentences with a built model and print JSON",
        description="Classify each SENTENCE with the model in MODEL (a directory made by"
        " 'voice-agent convert') and print one JSON object per sentence: intent (null when"
        " rejected), confidence and slots with their canonical value and character range.",
    )
    classify.add_argument(
        "model", metavar="MODEL", help="model directory, e.g. models/smart-home-en"
    )
    classify.add_argument(
        "sentence",
        metavar="SENTENCE",
        nargs="+",
        help="text to classify ('-' reads lines from stdin)",
    )
    classify.add_argument(
        "--runtime",
        default="auto",
        choices=("auto", *RUNTIMES),
        help="TFLite runtime (default: auto = the first of %(choices)s that imports)",
    )
    classify.set_defaults(func=_classify)

    for plugin in sorted(entry_points(group="voice_agent.commands"), key=lambda e: e.name):
        plugin.load()(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (UsageError, ModelError, RuntimeUnavailable) as err:
        print(f"voice-agent: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
