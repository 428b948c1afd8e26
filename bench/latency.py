"""Time the runtime classifier on .tflite files with each installed TFLite runtime.

Runs exactly the Pi's code path, split in its two halves: *featurize* (normalize,
tokenize, hash the n-grams: ``Featurizer.occurrences``) and *invoke* (set the
inputs, run the model: ``SparseRunner.raw``); *total* is
their sum for the same utterance. One utterance at a time on one thread, over one data
set's test sentences (or an intent spec's sentences), in a fresh process per runtime
(tflite-runtime cannot share a process with TensorFlow). Each figure is the median over
``--runs`` passes of that pass's p50 or p99, so a busy machine skews it less; the load
average is printed with the table.

    python bench/latency.py models/smart-home-en/intent.tflite --spec examples/en/smart-home.yaml
    python bench/latency.py /tmp/nlu/work/clinc150/student-int8.tflite --dataset clinc150
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RUNTIMES = ("tflite_runtime", "ai_edge_litert")
PARTS = ("featurize", "invoke", "total")


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(model: str, runtime: str, dim: int, texts_file: str, runs: int) -> None:
    """Load ``model`` with ``runtime`` and print one JSON line of timings (microseconds)."""
    import numpy as np

    from agent.featurize import Featurizer, FeaturizerConfig, tokenize
    from agent.metadata import load_model_info
    from agent.tflite import SparseRunner, open_interpreter

    path = Path(model).resolve()
    sidecar = path.with_suffix(".featurizer.json")
    if path.name == "intent.tflite" and (path.parent / "model.json").is_file():
        config = load_model_info(path.parent).featurizer
    elif sidecar.is_file():  # a bare .tflite from bench/nlu.py, with its word rows
        config = FeaturizerConfig.from_json(json.loads(sidecar.read_text()))
    else:
        config = FeaturizerConfig(dim=dim)
    featurizer = Featurizer(config)
    content = path.read_bytes()
    runner = SparseRunner(lambda: open_interpreter(path, runtime, 1, content)[0])
    texts = json.loads(Path(texts_file).read_text())
    for text in texts:  # warm up: hash every word once, as a long-running daemon has
        runner.raw(featurizer.occurrences(tokenize(text)))
    clock = time.perf_counter
    passes: dict[str, list[list[float]]] = {part: [] for part in PARTS}
    for _ in range(runs):
        featurize = np.empty(len(texts))
        invoke = np.empty(len(texts))
        for i, text in enumerate(texts):
            start = clock()
            features = featurizer.occurrences(tokenize(text))
            middle = clock()
            runner.raw(features)
            end = clock()
            featurize[i] = middle - start
            invoke[i] = end - middle
        for part, seconds in zip(PARTS, (featurize, invoke, featurize + invoke), strict=True):
            passes[part].append(np.percentile(seconds * 1e6, [50, 99]).tolist())
    result = {part: np.median(np.array(v), axis=0).tolist() for part, v in passes.items()}
    print(json.dumps({**result, "rss": _peak_rss_mb(), "n": len(texts), "runs": runs}))


def _texts(args: argparse.Namespace) -> tuple[list[str], str]:
    if args.spec:
        from convert.sentences import expand_spec
        from convert.spec import load_spec

        spec = load_spec(args.spec)
        return [e.text for e in expand_spec(spec, 400, 0)][: args.limit], f"{spec.name} spec"
    from bench.datasets import ALL, default_root

    data = ALL[args.dataset](default_root())
    return [t for t, _ in data.test][: args.limit], f"{args.dataset} test"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", nargs="+", help=".tflite files")
    parser.add_argument("--dataset", default="snips", help="test sentences from this data set")
    parser.add_argument("--spec", type=Path, help="sentences of this intent spec instead")
    parser.add_argument("--limit", type=int, default=1000, help="sentences per pass")
    parser.add_argument("--runs", type=int, default=5, help="passes; figures are medians")
    parser.add_argument(
        "--dim", type=int, default=8192, help="featurizer buckets of a bare .tflite"
    )
    parser.add_argument(
        "--child", nargs=4, metavar=("RUNTIME", "DIM", "TEXTS", "RUNS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        runtime, dim, texts_file, runs = args.child
        child(args.model[0], runtime, int(dim), texts_file, int(runs))
        return
    texts, source = _texts(args)
    texts_file = Path(f"/tmp/bench-latency-texts-{os.getpid()}.json")
    texts_file.write_text(json.dumps(texts))
    print(
        f"{len(texts)} {source} sentences, one at a time, one thread; median of {args.runs}"
        f" passes' p50 / p99 in µs; load average {os.getloadavg()[0]:.2f} at start\n"
    )
    print("| model | runtime | featurize | invoke | total | peak RSS |")
    print("|---|---|---:|---:|---:|---:|")
    try:
        for model in args.model:
            for runtime in RUNTIMES:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        model,
                        "--child",
                        runtime,
                        str(args.dim),
                        str(texts_file),
                        str(args.runs),
                    ],
                    capture_output=True,
                    text=True,
                )
                if out.returncode:
                    error = (out.stderr.strip().splitlines() or ["?"])[-1]
                    print(f"| {model} | {runtime} | failed: {error} | | | |")
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                cells = [f"{r[part][0]:.0f} / {r[part][1]:.0f}" for part in PARTS]
                print(f"| {model} | {runtime} | {' | '.join(cells)} | {r['rss']:.0f} MB |")
    finally:
        texts_file.unlink(missing_ok=True)
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
