"""Time the runtime classifier on a .tflite file with each installed TFLite runtime.

Runs exactly the Pi's code path (``agent.classifier.IntentClassifier``: normalize,
featurize, quantize the touched buckets, invoke) over one data set's test sentences, one
utterance at a time on one thread, in a fresh process per runtime (tflite-runtime cannot
share a process with TensorFlow), and prints a markdown table.

    python bench/latency.py /tmp/nlu/work/snips/student-int8.tflite --dataset snips
    python bench/latency.py models/smart-home-en/intent.tflite
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(model: str, runtime: str, dim: int, texts_file: str) -> None:
    import tempfile

    import numpy as np

    from agent.classifier import IntentClassifier
    from agent.featurize import FeaturizerConfig
    from agent.metadata import IntentInfo, ModelInfo, load_model_info
    from agent.tflite import open_interpreter

    path = Path(model).resolve()
    if path.name == "intent.tflite" and (path.parent / "model.json").is_file():
        info = load_model_info(path.parent)
    else:
        # A bare .tflite from bench/nlu.py: labels are class numbers, no slots, no actions.
        folder = Path(tempfile.mkdtemp(prefix="bench-latency-"))
        (folder / "intent.tflite").symlink_to(path)
        interpreter, _ = open_interpreter(path, runtime)
        classes = int(interpreter.get_output_details()[0]["shape"][-1])
        labels = tuple(str(i) for i in range(classes))
        info = ModelInfo(
            directory=folder,
            name=path.stem,
            language="en",
            version="1",
            spec_sha256="",
            labels=labels,
            threshold=0.0,
            featurizer=FeaturizerConfig(dim=dim),
            slots={},
            intents={label: IntentInfo(label, (), (), ()) for label in labels},
        )
    classifier = IntentClassifier(info, runtime)
    texts = json.loads(Path(texts_file).read_text())
    for text in texts[:200]:
        classifier.classify(text)
    samples = []
    for _ in range(3):
        for text in texts:
            start = time.perf_counter()
            classifier.classify(text)
            samples.append(time.perf_counter() - start)
    p50, p99 = np.percentile(np.array(samples) * 1e6, [50, 99])
    print(json.dumps({"p50": p50, "p99": p99, "rss": _peak_rss_mb(), "n": len(samples)}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", nargs="+", help=".tflite files")
    parser.add_argument("--dataset", default="snips", help="test sentences from this data set")
    parser.add_argument(
        "--dim", type=int, default=8192, help="featurizer buckets of a bare .tflite"
    )
    parser.add_argument(
        "--child", nargs=3, metavar=("RUNTIME", "DIM", "TEXTS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        child(args.model[0], args.child[0], int(args.child[1]), args.child[2])
        return
    from bench.datasets import ALL, default_root

    texts = [t for t, _ in ALL[args.dataset](default_root()).test][:1000]
    texts_file = Path("/tmp/bench-latency-texts.json")
    texts_file.write_text(json.dumps(texts))
    print(f"{len(texts)} {args.dataset} test sentences x 3, one at a time, one thread\n")
    print("| model | runtime | p50 | p99 | peak RSS |")
    print("|---|---|---:|---:|---:|")
    for model in args.model:
        for runtime in ("tflite_runtime", "ai_edge_litert"):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    model,
                    "--child",
                    runtime,
                    str(args.dim),
                    str(texts_file),
                ],
                capture_output=True,
                text=True,
            )
            if out.returncode:
                print(
                    f"| {model} | {runtime} | failed: {out.stderr.strip().splitlines()[-1]} | | |"
                )
                continue
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"| {model} | {runtime} | {r['p50']:.0f} µs | {r['p99']:.0f} µs"
                f" | {r['rss']:.0f} MB |"
            )


if __name__ == "__main__":
    main()
