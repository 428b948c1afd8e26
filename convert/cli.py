"""``voice-agent convert``: build a model directory from an intent spec.

Plugged into the ``voice-agent`` command through an entry point, so the daemon's CLI
never imports TensorFlow; this module itself imports it only when the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Build models/NAME from an intent spec (YAML): expand the sentence templates into training
sentences, train a teacher, distill it into a small student, prune it, quantize it to int8,
and write intent.tflite, model.json, grammar.json (the Vosk vocabulary), report.json,
report.md and confusion.png. Every stage is scored on a held-out split and summarized at
the end; then the same recipe is refit on every sentence, the held-out ones included, and
that model is the one written, so that no command the templates write out is unknown to
it. The same spec and --seed give a byte-identical model."""


def register(commands: Any) -> None:
    """Add the ``convert`` subcommand to the ``voice-agent`` parser."""
    parser = commands.add_parser(
        "convert",
        help="build an int8 TFLite intent model from a spec (needs TensorFlow)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "spec", metavar="SPEC", type=Path, help="intent spec, e.g. examples/en/smart-home.yaml"
    )
    parser.add_argument(
        "-o", "--output", type=Path, help="model directory (default: models/<spec name>)"
    )
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument(
        "--teacher",
        choices=("mlp", "minilm", "none"),
        default="mlp",
        help="distillation teacher: a wider network, MiniLM sentence embeddings (needs torch),"
        " or none to train on labels alone (default: %(default)s)",
    )
    parser.add_argument(
        "--prune",
        type=float,
        default=0.5,
        metavar="SPARSITY",
        help="magnitude-prune to this fraction of zero weights, 0 to skip (default: %(default)s)",
    )
    parser.add_argument(
        "--quantize",
        choices=("int8", "float16", "float32"),
        default="int8",
        help="weights and activations of the shipped model (default: %(default)s)",
    )
    parser.add_argument(
        "--epochs", type=int, default=30, help="student epochs (default: %(default)s)"
    )
    parser.add_argument(
        "--sentences-per-intent",
        type=int,
        default=400,
        metavar="N",
        help="cap of training sentences per intent, sampled when templates explode"
        " (default: %(default)s)",
    )
    parser.add_argument(
        "--dim",
        type=int,
        default=4096,
        help="hashed feature buckets, a power of two (default: %(default)s)",
    )
    parser.add_argument(
        "--hidden", type=int, default=96, help="hidden units of the student (default: %(default)s)"
    )
    parser.add_argument(
        "--word-vectors",
        default="",
        metavar="minilm|FILE",
        help="give the student a word branch over pretrained word vectors, so that words the"
        " spec never pairs with an intent still count ('lamp' near 'light'): minilm (English,"
        " needs torch like --teacher minilm) or a word2vec / GloVe / fastText .vec text file"
        " in the spec's language; the model grows by ~400 bytes per word (default: none)",
    )
    parser.add_argument(
        "--word-lexicon",
        type=int,
        default=20000,
        metavar="N",
        help="words besides the spec's own: the first N of a vector FILE (such files list"
        " the most frequent first) or of MiniLM's 21,719; 0 for the spec's words alone, which"
        " is all a grammar-constrained recognizer can return (default: %(default)s)",
    )
    parser.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        help="write the model the held-out split scored instead of refitting on every sentence"
        " (half the build time)",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress, summary only")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from agent.errors import UsageError
    from agent.featurize import FeaturizerConfig
    from convert.quiet import silenced
    from convert.spec import SpecError, load_spec
    from convert.vectors import MINILM, VectorsError

    try:
        spec = load_spec(args.spec)
    except SpecError as err:
        raise UsageError(str(err)) from None
    if not 0.0 <= args.prune < 1.0:
        raise UsageError(f"--prune must be in [0, 1), not {args.prune}")
    if args.epochs < 1 or args.sentences_per_intent < 1 or args.hidden < 1:
        raise UsageError("--epochs, --sentences-per-intent and --hidden must be positive")
    if args.word_lexicon < 0:
        raise UsageError(f"--word-lexicon must be 0 or more, not {args.word_lexicon}")
    language = spec.language.split("-")[0].lower()
    if args.word_vectors == MINILM and language != "en":
        raise UsageError(
            f"--word-vectors minilm knows English words only, and {args.spec} is"
            f" '{spec.language}': give a vector file in that language (fastText's"
            f" cc.{language}.300.vec, for one)"
        )
    if args.word_vectors not in ("", MINILM) and not Path(args.word_vectors).is_file():
        raise UsageError(f"--word-vectors: {args.word_vectors}: no such file")
    try:
        featurizer = FeaturizerConfig(dim=args.dim)
    except ValueError as err:
        raise UsageError(f"--dim: {err}") from None
    # TensorFlow's C++ start-up logging would drown the progress display.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", module="tensorflow")
    try:
        with silenced():
            import tensorflow  # noqa: F401
    except ImportError:
        raise UsageError(
            "the conversion step needs TensorFlow: pip install 'voice-agent[convert]'"
        ) from None
    from convert.teacher import minilm_missing

    if args.teacher == "minilm" and (missing := minilm_missing()):
        raise UsageError(f"--teacher minilm needs MiniLM: {missing}")
    if args.word_vectors == MINILM and (missing := minilm_missing()):
        raise UsageError(f"--word-vectors minilm needs MiniLM: {missing}")
    from convert.build import BuildOptions, build
    from convert.model import MlpConfig
    from convert.report import shipped_lines, stage_table

    options = BuildOptions(
        seed=args.seed,
        sentences_per_intent=args.sentences_per_intent,
        featurizer=featurizer,
        student=MlpConfig(hidden=args.hidden),
        epochs=args.epochs,
        teacher=args.teacher,
        prune=args.prune,
        quantize=args.quantize,
        refit=args.refit,
        word_vectors=args.word_vectors,
        word_lexicon=args.word_lexicon,
    )
    output = args.output or Path("models") / spec.name
    started = time.monotonic()

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"{time.monotonic() - started:6.1f}s {message}", file=sys.stderr, flush=True)

    try:
        result = build(spec, output, options, progress)
    except VectorsError as err:
        raise UsageError(str(err)) from None
    rej = result.rejection
    print(
        f"\n{spec.name}: {len(result.labels)} labels, {result.train_count} training sentences,"
        f" {result.validation_count} held out\n"
    )
    print("\n".join(stage_table(result.report["stages"])))
    print(
        f"\nthreshold {rej.threshold:.2f}: in-scope accuracy {rej.in_scope_accuracy:.2%},"
        f" out-of-scope rejected {rej.out_of_scope_rejected:.2%}\n"
    )
    print("\n".join(shipped_lines(result.report["shipped"])).replace("`", ""))
    print(f"\nwrote {output}/ in {time.monotonic() - started:.0f}s (see {output}/report.md)")
    return 0
