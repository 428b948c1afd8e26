"""Benchmark the intent classifier on public data sets, side by side with its teacher and a
TF-IDF + linear SVM baseline, and print one markdown table.

Per data set (train split to train, test split to report; CLINC150's val split to choose
the out-of-scope confidence threshold): the teacher is trained (MiniLM, fine-tuned end to
end on SNIPS and HWU64, frozen on CLINC150; or another sentence encoder from a local
folder) or loaded from the teacher cache, labels the transfer set
(train sentences, word-dropped copies of them, and the other data sets' train sentences as
unlabeled text; its logits are cached too), the student is distilled from it, exported to
float32 and int8 TFLite.
Every model is then loaded in a fresh child process that scores the val and test sentences
and times one utterance at a time (featurize + invoke, one thread), so that peak RSS is
the model's own and ``tflite_runtime`` never shares a process with TensorFlow.

    python bench/nlu.py                       # all three data sets, MiniLM teacher
    python bench/nlu.py --quick --datasets snips --teacher mlp   # smoke run
    python bench/nlu.py --teacher-encoder snips=mpnet/all-mpnet-base-v2 \\
        --finetune-lr snips=5e-5              # SNIPS taught by all-mpnet-base-v2
"""

from __future__ import annotations

import argparse
import bisect
import dataclasses
import hashlib
import json
import logging
import os
import pickle
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from agent.featurize import Featurizer, FeaturizerConfig  # noqa: E402
from bench.datasets import ALL, OOS, Dataset, default_root  # noqa: E402

STUDENT_FEATURIZER = FeaturizerConfig(dim=8192)
"""Hashed word 1-2 grams + char 2-4 grams: the runtime's input vector (``--dim``,
``--char-max`` change it for one run)."""


@dataclass
class Row:
    """One model's measurements on one data set."""

    accuracy: float
    oos_recall: float | None
    size: int
    p50_us: float
    p99_us: float
    rss_mb: float
    threshold: float | None = None
    tradeoff: tuple[tuple[float, float, float], ...] = ()
    """With out-of-scope queries: (cost, in-scope %, oos recall %) for each of
    :data:`OOS_COSTS`, the threshold chosen on val as for the table."""
    cold_us: tuple[float, float] = (0.0, 0.0)
    """p50 and p99 of the first timed pass, before the featurizer has seen the words."""


@dataclass
class Result:
    dataset: str
    rows: dict[str, Row] = field(default_factory=dict)
    seconds: float = 0.0


# --------------------------------------------------------------------------- child side


def _child(kind: str, model_path: str, texts_path: str, out_path: str, n_latency: int) -> None:
    """Load one model, score every sentence, time single utterances, report peak RSS.

    Runs in its own process: ``tflite_runtime`` must not meet TensorFlow, and the RSS is
    then the model's own (Python + numpy + runtime + weights), not the trainer's.
    """
    payload = json.loads(Path(texts_path).read_text(encoding="utf-8"))
    texts: list[str] = payload["texts"]
    timed: list[str] = payload["timed"]
    batch_scores = None
    if kind == "tflite":
        from tflite_runtime.interpreter import Interpreter

        from agent.featurize import tokenize
        from agent.tflite import SparseRunner

        # The settings the file was exported with, from the sidecar bench/latency.py reads.
        sidecar = Path(model_path).with_suffix(".featurizer.json")
        featurizer = Featurizer(FeaturizerConfig.from_json(json.loads(sidecar.read_text())))
        content = Path(model_path).read_bytes()
        runner = SparseRunner(lambda: Interpreter(model_content=content, num_threads=1))

        # The Pi's path: agent.classifier.IntentClassifier runs the model the same way.
        def run(text: str) -> np.ndarray:
            return runner.probabilities(featurizer.occurrences(tokenize(text)))

    elif kind == "teacher":
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(1)
        with open(model_path, "rb") as handle:
            teacher = pickle.load(handle)
        if hasattr(teacher, "threads"):
            teacher.threads = 1
        if hasattr(teacher, "memoize"):
            teacher.memoize = False  # time real encoding, not cache hits

        def run(text: str) -> np.ndarray:
            return teacher.logits([text])[0]

        def batch_scores(texts: list[str]) -> np.ndarray:
            if hasattr(teacher, "memoize"):
                teacher.memoize = True
            return teacher.logits(texts)

    elif kind == "svm":
        with open(model_path, "rb") as handle:
            svm = pickle.load(handle)

        def run(text: str) -> np.ndarray:
            return svm.decision_function([text])[0]

        def batch_scores(texts: list[str]) -> np.ndarray:
            return svm.decision_function(texts).astype(np.float32)

    else:
        raise SystemExit(f"unknown child kind {kind}")

    for text in timed[:50]:
        run(text)

    def timings() -> tuple[float, float]:
        samples = []
        for text in timed[:n_latency]:
            start = time.perf_counter()
            run(text)
            samples.append(time.perf_counter() - start)
        p50, p99 = np.percentile(np.array(samples) * 1e6, [50, 99])
        return float(p50), float(p99)

    # Two passes: in the first most words are new to the student's featurizer, whose hash
    # cache a long-running daemon has filled with its vocabulary; the second is that
    # steady state, and the table's figure. (The teacher and the SVM have no such cache.)
    cold_p50, cold_p99 = timings()
    p50, p99 = timings()
    rss_mb = _peak_rss_mb()  # before scoring, which may load caches
    if batch_scores is not None:
        scores = batch_scores(texts)
    else:
        scores = np.stack([np.asarray(run(t), np.float32) for t in texts])
    np.save(out_path, scores)
    stats = {"p50": p50, "p99": p99, "cold_p50": cold_p50, "cold_p99": cold_p99, "rss_mb": rss_mb}
    Path(out_path + ".json").write_text(json.dumps(stats))


def _peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM; ru_maxrss would include the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _run_child(
    kind: str,
    model_path: Path,
    texts: list[str],
    timed: list[str],
    work: Path,
    n_latency: int,
) -> tuple[np.ndarray, dict[str, float]]:
    texts_path = work / f"{kind}-texts.json"
    texts_path.write_text(json.dumps({"texts": texts, "timed": timed}))
    out_path = work / f"{kind}-{model_path.stem}-scores.npy"
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_CPP_MIN_LOG_LEVEL="3")
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        str(model_path),
        str(texts_path),
        str(out_path),
        str(n_latency),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"child {kind} failed:\n{proc.stderr[-3000:]}")
    return np.load(out_path), json.loads(Path(str(out_path) + ".json").read_text())


# --------------------------------------------------------------------------- parent side


def word_dropout(texts: list[str], copies: int, seed: int) -> list[str]:
    """Copies of each sentence (of 3+ words) with one random word dropped."""
    rng = random.Random(f"{seed}:dropout")
    out: list[str] = []
    for _ in range(copies):
        for text in texts:
            words = text.split()
            if len(words) >= 3:
                del words[rng.randrange(len(words))]
                out.append(" ".join(words))
    return out


def neighbour_copies(
    texts: list[str], copies: int, seed: int, lexicon: tuple[str, ...], vectors: np.ndarray
) -> list[str]:
    """Copies of each sentence with each word of 3+ letters, with probability 1/4, replaced
    by one of its 10 nearest lexicon words (cosine >= 0.6 between MiniLM vectors): new
    sentences near the train split for the teacher to label (Tang et al., 2019), whose
    words the student's branch reads through the same vectors."""
    from agent.featurize import tokenize

    if not copies:
        return []
    rng = random.Random(f"{seed}:neighbours")
    unit = vectors[2:] / (np.linalg.norm(vectors[2:], axis=1, keepdims=True) + 1e-9)
    row = {word: i for i, word in enumerate(lexicon)}
    sentences = [tokenize(text) for text in texts]
    words = sorted({w for ws in sentences for w in ws if len(w) > 2 and w in row})
    near: dict[str, list[str]] = {}
    k = min(10, len(lexicon))
    for start in range(0, len(words), 512):
        block = words[start : start + 512]
        sims = unit[[row[w] for w in block]] @ unit.T
        for i, word in enumerate(block):
            sims[i, row[word]] = -1.0
            top = np.argpartition(-sims[i], k - 1)[:k]
            near[word] = [lexicon[j] for j in sorted(top) if sims[i, j] >= 0.6]
    out: list[str] = []
    for _ in range(copies):
        for ws in sentences:
            new = [rng.choice(near[w]) if near.get(w) and rng.random() < 0.25 else w for w in ws]
            if new != ws:
                out.append(" ".join(new))
    return out


def word_swaps(texts: list[str], copies: int, seed: int) -> list[str]:
    """Copies of each sentence (of 3+ words) with two neighbouring words swapped: word order
    the labelled data never shows, for the teacher to label."""
    rng = random.Random(f"{seed}:swap")
    out: list[str] = []
    for _ in range(copies):
        for text in texts:
            words = text.split()
            if len(words) >= 3:
                i = rng.randrange(len(words) - 1)
                words[i], words[i + 1] = words[i + 1], words[i]
                out.append(" ".join(words))
    return out


def recombine(texts: list[str], labels: np.ndarray, copies: int, seed: int) -> list[str]:
    """Sentences spliced from the start of one train sentence and the end of another of the
    same intent: new n-gram combinations (carrier phrase x entity) that stay in-domain."""
    rng = random.Random(f"{seed}:recombine")
    by_label: dict[int, list[list[str]]] = {}
    for text, label in zip(texts, labels.tolist(), strict=True):
        by_label.setdefault(int(label), []).append(text.split())
    out: list[str] = []
    for _ in range(copies):
        for text, label in zip(texts, labels.tolist(), strict=True):
            head, tail = text.split(), rng.choice(by_label[int(label)])
            if len(head) < 2 or len(tail) < 2:
                continue
            cut_a, cut_b = rng.randrange(1, len(head)), rng.randrange(1, len(tail))
            out.append(" ".join(head[:cut_a] + tail[cut_b:]))
    return out


def slot_swaps(
    texts: list[str], tags: list[tuple[str, ...]], labels: np.ndarray, copies: int, seed: int
) -> tuple[list[str], np.ndarray]:
    """Copies of each tagged train sentence with each slot value (a BIO span), with
    probability 1/2 and at least one, replaced by another train value of the same slot in
    the same intent: the carrier phrases with titles and names they were never seen with,
    as the spec's templates x slot lists make them for a real model. Returns the copies
    and their intents (the source sentence's: a slot's value does not change the intent);
    none for a data set without tags."""
    if not copies or not tags:
        return [], np.zeros(0, np.int64)
    rng = random.Random(f"{seed}:slots")
    parsed: list[tuple[list[str], list[tuple[int, int, str]]]] = []
    seen: dict[tuple[int, str], set[tuple[str, ...]]] = {}
    for text, sentence_tags, label in zip(texts, tags, labels.tolist(), strict=True):
        words, spans = text.split(), []
        for i, tag in enumerate(sentence_tags):
            if tag.startswith("B-") or (tag.startswith("I-") and (not spans or spans[-1][1] != i)):
                spans.append((i, i + 1, tag[2:]))
            elif tag.startswith("I-"):
                spans[-1] = (spans[-1][0], i + 1, spans[-1][2])
        parsed.append((words, spans))
        for start, end, slot in spans:
            seen.setdefault((int(label), slot), set()).add(tuple(words[start:end]))
    values = {key: sorted(found) for key, found in seen.items()}
    out: list[str] = []
    intents: list[int] = []
    for _ in range(copies):
        for (words, spans), label in zip(parsed, labels.tolist(), strict=True):
            if not spans:
                continue
            chosen = {i for i in range(len(spans)) if rng.random() < 0.5}
            chosen = chosen or {rng.randrange(len(spans))}
            new: list[str] = []
            at = 0
            for i, (start, end, slot) in enumerate(spans):
                new += words[at:start]
                value = tuple(words[start:end])
                others = values[(int(label), slot)] if i in chosen else []
                if len(others) > 1:
                    own = bisect.bisect_left(others, value)  # others is sorted
                    value = others[(own + rng.randrange(1, len(others))) % len(others)]
                new += value
                at = end
            new += words[at:]
            if new != words:
                out.append(" ".join(new))
                intents.append(int(label))
    return out, np.array(intents, np.int64)


class LogitStore:
    """A teacher's logits per sentence on disk (``logits-texts.json`` + ``logits.npy``), so
    students can be iterated over new transfer sets without re-running the teacher on the
    sentences it has already labelled."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rows: dict[str, np.ndarray] = {}
        texts_path = folder / "logits-texts.json"
        if texts_path.exists():
            texts = json.loads(texts_path.read_text(encoding="utf-8"))
            logits = np.load(folder / "logits.npy")
            if len(texts) == len(logits):
                self.rows = dict(zip(texts, logits, strict=True))

    def missing(self, texts: list[str]) -> list[str]:
        return list(dict.fromkeys(t for t in texts if t not in self.rows))

    def add(self, texts: list[str], logits: np.ndarray) -> None:
        self.rows.update(zip(texts, logits.astype(np.float32), strict=True))
        self.folder.mkdir(parents=True, exist_ok=True)
        texts = list(self.rows)
        np.save(self.folder / "logits.npy", np.stack([self.rows[t] for t in texts]))
        (self.folder / "logits-texts.json").write_text(json.dumps(texts), encoding="utf-8")

    def get(self, texts: list[str]) -> np.ndarray:
        return np.stack([self.rows[t] for t in texts])


def per_dataset(spec: str, dataset: str) -> str | None:
    """``dataset``'s value in a per-data-set option: ``V`` for every data set, or
    ``snips=V,hwu64=W`` (None for a data set left out, and for an empty ``spec``)."""
    if "=" not in spec:
        return spec or None
    pairs = dict(item.split("=", 1) for item in spec.split(",") if item.strip())
    return pairs.get(dataset.lower())


def finetune_epochs(spec: str, dataset: str) -> int:
    """Encoder fine-tuning epochs for ``dataset`` from ``--finetune``: ``N`` for every data
    set, or ``snips=1,hwu64=0`` (data sets left out get 0: a frozen encoder)."""
    return int(per_dataset(spec, dataset) or 0)


def teacher_encoder(args: argparse.Namespace, dataset: str) -> Path | None:
    """``--teacher-encoder``'s folder for ``dataset`` (None: MiniLM)."""
    folder = per_dataset(args.teacher_encoder, dataset)
    return Path(folder) if folder else None


FINETUNE_LR = 1e-4
"""MiniLM's fine-tuning rate: ``--finetune-lr`` where it names none, and left out of the
teacher cache's key so that the keys of the teachers trained before the option still hold."""


def finetune_rate(args: argparse.Namespace, dataset: str) -> float:
    """``--finetune-lr`` for ``dataset`` (:data:`FINETUNE_LR` where it says nothing)."""
    return float(per_dataset(args.finetune_lr, dataset) or FINETUNE_LR)


def check_per_dataset(args: argparse.Namespace, names: list[str]) -> str | None:
    """The first per-data-set option that does not hold for one of ``names``, as a line."""
    for name in names:
        try:
            finetune_epochs(args.finetune, name)
        except ValueError:
            return f"--finetune: expected N or snips=N,hwu64=M, got {args.finetune!r}"
        try:
            finetune_rate(args, name)
        except ValueError:
            return f"--finetune-lr: expected a rate or snips=R,hwu64=S, got {args.finetune_lr!r}"
        encoder = teacher_encoder(args, name)
        if encoder is not None and not (encoder / "config.json").is_file():
            return f"--teacher-encoder: {encoder} is not a sentence-transformers model folder"
    return None


def teacher_key(data: Dataset, args: argparse.Namespace) -> str:
    """Cache key of a trained teacher: its recipe and a digest of the train split."""
    digest = hashlib.sha256(json.dumps(data.train).encode("utf-8")).hexdigest()[:10]
    epochs = 2 if args.quick else args.teacher_epochs
    finetune = finetune_epochs(args.finetune, data.name)
    encoder = teacher_encoder(args, data.name)
    name = encoder.name if encoder else args.teacher
    lr = finetune_rate(args, data.name)
    rate = f"-lr{lr:g}" if finetune and lr != FINETUNE_LR else ""
    return f"{data.name.lower()}-{name}-ft{finetune}{rate}-e{epochs}-s{args.seed}-{digest}"


def sparse_features(featurizer: Featurizer, texts: list[str]) -> Any:
    """The featurizer's vectors of ``texts`` as a CSR matrix: the transfer set is ~10^5
    sentences x 10^4 buckets, which as a dense float32 matrix would take gigabytes."""
    from scipy.sparse import csr_matrix

    from agent.featurize import tokenize

    indptr, indices, values = [0], [], []
    for text in texts:
        ids, weights, scale, _ = featurizer.occurrences(tokenize(text))
        indices.append(ids)
        values.append(weights.astype(np.float64) * scale)
        indptr.append(indptr[-1] + len(ids))
    # Repeated buckets are summed by the conversion to canonical form: the dense vector.
    matrix = csr_matrix(
        (  # (data, indices, indptr)
            np.concatenate(values) if values else np.zeros(0, np.float32),
            np.concatenate(indices) if indices else np.zeros(0, np.intp),
            np.array(indptr),
        ),
        shape=(len(texts), featurizer.config.dim),
        dtype=np.float32,
    )
    matrix.sum_duplicates()
    return matrix


OOS_COSTS = (1.0, 0.5, 0.25, 0.0)
"""Points of val in-scope accuracy an out-of-scope threshold may cost, for the trade-off
lines under the table (0: no threshold)."""


def choose_threshold(scores: np.ndarray, truth: np.ndarray, oos: int, cost: float = 1.0) -> float:
    """Confidence cut with the best oos recall on val that costs at most ``cost`` points of
    in-scope accuracy (against no cut): out-of-scope rejection must not eat the intents."""
    top = scores.max(1)
    base, _ = accuracy(scores, truth, oos, None)
    best, best_recall = -np.inf, -1.0
    for cut in np.unique(np.quantile(top, np.linspace(0.0, 0.5, 201))):
        in_scope, recall = accuracy(scores, truth, oos, float(cut))
        if in_scope >= base - cost and recall is not None and recall > best_recall:
            best, best_recall = float(cut), recall
    return best


def accuracy(
    scores: np.ndarray, truth: np.ndarray, oos: int | None, threshold: float | None = None
) -> tuple[float, float | None]:
    """Accuracy in percent; with an oos class, (in-scope accuracy, oos recall)."""
    pred = scores.argmax(1)
    if oos is None:
        return float(np.mean(pred == truth) * 100), None
    if threshold is not None:
        pred = np.where(scores.max(1) < threshold, oos, pred)
    scope = truth != oos
    return float(np.mean(pred[scope] == truth[scope]) * 100), float(
        np.mean(pred[~scope] == oos) * 100
    )


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


def make_teacher(
    name: str,
    quick: bool,
    cache: Path,
    finetune: int = 0,
    epochs: int = 15,
    threads: int | None = None,
    encoder: Path | None = None,
    finetune_lr: float = FINETUNE_LR,
) -> Any:
    """The ``--teacher`` model; ``cache`` holds the frozen encoder's embeddings."""
    from convert.teacher import MiniLMTeacher, MlpTeacher

    epochs = 2 if quick else epochs
    if name == "mlp":
        return MlpTeacher(epochs=epochs)
    if name == "minilm":
        return MiniLMTeacher(
            epochs=epochs,
            cache_dir=cache,
            finetune_epochs=finetune,
            finetune_lr=finetune_lr,
            threads=threads,
            encoder=encoder,
        )
    raise SystemExit(f"unknown teacher {name}")


def train_svm(texts: list[str], labels: np.ndarray) -> Any:
    """The TF-IDF (word 1-2 + char 2-5) + linear SVM reference."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline, make_union
    from sklearn.svm import LinearSVC

    model = make_pipeline(
        make_union(
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True),
        ),
        LinearSVC(C=1.0),
    )
    return model.fit(texts, labels)


def cached_teacher(
    data: Dataset,
    args: argparse.Namespace,
    transfer: list[str],
    n_classes: int,
    work: Path,
    log: Any,
) -> tuple[Path, np.ndarray, int]:
    """The teacher of this recipe (trained now, or loaded from the cache) and its logits on
    ``transfer``: returns the pickled teacher's path, the logits and the teacher's bytes."""
    labels = sorted({label for _, label in data.train})
    index = {label: i for i, label in enumerate(labels)}
    train_texts = [t for t, _ in data.train]
    y_train = np.array([index[lab] for _, lab in data.train], np.int64)
    cache = (args.teacher_cache or work.parent / "teachers") / teacher_key(data, args)
    teacher_path, meta_path = cache / "teacher.pkl", cache / "teacher.json"
    teacher: Any = None
    if not meta_path.exists():
        finetune = finetune_epochs(args.finetune, data.name)
        name = teacher_label(args, [data.name])
        log(f"[{data.name}] teacher {name} (finetune {finetune}) -> {cache}")
        teacher = make_teacher(
            args.teacher,
            args.quick,
            work.parent / "cache",
            finetune,
            args.teacher_epochs,
            args.teacher_threads,
            teacher_encoder(args, data.name),
            finetune_rate(args, data.name),
        )
        fitted = time.time()
        teacher.fit(train_texts, y_train, n_classes, args.seed)
        meta = {"size_bytes": teacher.size_bytes(), "fit_seconds": time.time() - fitted}
        log(f"[{data.name}] teacher fit in {meta['fit_seconds']:.0f} s")
        memo = getattr(teacher, "_memo", None)
        if memo is not None:
            teacher._memo = {}  # the embedding memo is a cache, not part of the model
        cache.mkdir(parents=True, exist_ok=True)
        with open(teacher_path, "wb") as handle:
            pickle.dump(teacher, handle)
        if memo is not None:
            teacher._memo = memo
        meta_path.write_text(json.dumps(meta))
    else:
        log(f"[{data.name}] teacher from {cache}")
    store = LogitStore(cache)
    missing = store.missing(transfer)
    if missing:
        if teacher is None:
            with open(teacher_path, "rb") as handle:
                teacher = pickle.load(handle)
        started = time.time()
        store.add(missing, teacher.logits(missing))
        log(f"[{data.name}] teacher labelled {len(missing)} in {time.time() - started:.0f} s")
    size = int(json.loads(meta_path.read_text())["size_bytes"])
    return teacher_path, store.get(transfer), size


def word_vectors(
    transfer: list[str], args: argparse.Namespace, cache: Path
) -> tuple[tuple[str, ...], np.ndarray]:
    """The word branch's lexicon (the transfer set's words, and with ``--lexicon minilm``
    MiniLM's whole words too) and its vectors, rows as the featurizer numbers them
    (padding and unknown word zero)."""
    from agent.featurize import tokenize
    from convert.vectors import minilm_vectors

    words = {w for t in transfer for w in tokenize(t)}
    limit = None if args.lexicon == "minilm" else 0
    vectors = minilm_vectors(words, args.teacher_threads, cache, limit)
    return vectors.words, vectors.table()


def student_seed(args: argparse.Namespace) -> int:
    """The seed of the student's weights, dropout and batches: ``--student-seed``, else
    ``--seed`` (which also draws the transfer set's copies and keys the teacher)."""
    return args.seed if args.student_seed is None else args.student_seed


def new_student(
    args: argparse.Namespace,
    n_classes: int,
    vectors: np.ndarray | None,
    featurizer: FeaturizerConfig,
) -> Any:
    """The untrained student, its initial weights and dropout seeds drawn from its seed:
    fit() seeds only its own shuffling, and a student built before it would start from
    whatever Keras's random state held (session 15's four runs of one command: 98.57,
    then 98.29 three times, each from other weights)."""
    import keras

    from convert.model import MlpConfig, build_mlp

    keras.utils.set_random_seed(student_seed(args))
    return build_mlp(
        args.dim,
        n_classes,
        MlpConfig(
            hidden=args.hidden,
            input_dropout=args.input_dropout,
            dropout=args.dropout,
            word_filters=args.word_filters,
        ),
        word_vectors=vectors,
        window=featurizer.window,
        positions=featurizer.positions,
    )


def bench_dataset(
    data: Dataset, others: list[Dataset], args: argparse.Namespace, work: Path
) -> Result:
    import keras

    from agent.featurize import tokenize
    from convert.distill import FitConfig, fit
    from convert.quantize import frequent_words, to_tflite
    from convert.vectors import WordVectors

    started = time.time()
    log = print if args.verbose else (lambda *a, **k: None)
    labels = sorted({label for _, label in data.train})
    index = {label: i for i, label in enumerate(labels)}
    n_classes = len(labels)
    oos = index.get(OOS) if data.has_oos else None
    train_texts = [t for t, _ in data.train]
    y_train = np.array([index[lab] for _, lab in data.train], np.int64)
    val_texts = [t for t, _ in data.val] if oos is not None else []
    y_val = np.array([index[lab] for _, lab in data.val], np.int64) if val_texts else None
    test_texts = [t for t, _ in data.test]
    y_test = np.array([index[lab] for _, lab in data.test], np.int64)
    eval_texts = val_texts + test_texts
    n_val = len(val_texts)
    timed = test_texts[: args.latency_n]
    result = Result(data.name)

    def finish(name: str, scores: np.ndarray, stats: dict[str, float], size: int) -> None:
        threshold, tradeoff = None, []
        if oos is not None and y_val is not None:
            threshold = choose_threshold(scores[:n_val], y_val, oos, args.oos_cost)
            for cost in OOS_COSTS:
                cut = choose_threshold(scores[:n_val], y_val, oos, cost) if cost else None
                in_scope, recall = accuracy(scores[n_val:], y_test, oos, cut)
                tradeoff.append((cost, in_scope, recall or 0.0))
        acc, oos_recall = accuracy(scores[n_val:], y_test, oos, threshold)
        result.rows[name] = Row(
            acc,
            oos_recall,
            size,
            stats["p50"],
            stats["p99"],
            stats["rss_mb"],
            threshold,
            tuple(tradeoff),
            (stats["cold_p50"], stats["cold_p99"]),
        )
        log(f"  {name}: {acc:.2f} / {oos_recall} thr={threshold} {stats}")

    # Teacher: trained once per recipe and cached with its logits (fine-tuning MiniLM takes
    # tens of minutes on 2 cores), so that student recipes iterate in minutes.
    transfer = train_texts + word_dropout(train_texts, args.dropout_copies, args.seed)
    transfer += word_swaps(train_texts, args.swap_copies, args.seed)
    transfer += recombine(train_texts, y_train, args.recombine_copies, args.seed)
    # Labelled copies: the student learns their intents as it does the train split's.
    swapped, y_swapped = slot_swaps(
        train_texts, data.train_tags, y_train, args.slot_copies, args.seed
    )
    at_swapped = len(transfer)
    transfer += swapped
    for other in others:
        transfer += [t for t, _ in other.train]
    student_featurizer = FeaturizerConfig(dim=args.dim, char_max=args.char_max)
    vectors = None
    if args.word_filters:
        # The word branch: every transfer word and MiniLM's whole words, each with its
        # MiniLM vector (the word encoded alone). Neighbour copies only use lexicon words,
        # so the lexicon is the same with or without them.
        lexicon, vectors = word_vectors(transfer, args, work.parent / "cache")
        student_featurizer = dataclasses.replace(
            student_featurizer, lexicon=lexicon, window=args.word_window
        )
        log(f"[{data.name}] word branch: {len(lexicon)} words, window {args.word_window}")
        copies = neighbour_copies(train_texts, args.neighbour_copies, args.seed, lexicon, vectors)
        log(f"[{data.name}] {len(copies)} neighbour-word copies")
        transfer += copies
    # Labels: the train split's and the slot swaps'; -1 (the teacher's alone) elsewhere.
    after_swapped = len(transfer) - at_swapped - len(swapped)
    y_transfer = np.concatenate(
        [
            y_train,
            -np.ones(at_swapped - len(train_texts), np.int64),
            y_swapped,
            -np.ones(after_swapped, np.int64),
        ]
    )
    teacher_path, teacher_logits, size = cached_teacher(data, args, transfer, n_classes, work, log)
    scores, stats = _run_child("teacher", teacher_path, eval_texts, timed, work, args.latency_n)
    finish("teacher", _softmax(scores), stats, size)
    tuned_teacher = finetune_epochs(args.finetune, data.name) > 0
    wanted = args.teacher_vectors == "always" or (args.teacher_vectors == "tuned" and tuned_teacher)
    if vectors is not None and args.teacher == "minilm" and wanted:
        # Beside each word's MiniLM vector, the teacher's own encoder's (fine-tuned to this
        # data set's intents): the table the export folds is as large either way.
        with open(teacher_path, "rb") as handle:
            teacher = pickle.load(handle)
        lexicon = student_featurizer.lexicon
        tuned = WordVectors("teacher", lexicon, teacher.embed(list(lexicon)))
        vectors = np.hstack([vectors, tuned.table()])
        del teacher

    # Student, distilled on the transfer set.
    log(f"[{data.name}] student on {len(transfer)} sentences")
    featurizer = Featurizer(student_featurizer)
    features = sparse_features(featurizer, transfer)
    if vectors is not None:
        features = (features, featurizer.word_id_matrix(transfer))
    student = new_student(args, n_classes, vectors, student_featurizer)
    config = FitConfig(
        epochs=2 if args.quick else args.epochs,
        alpha=args.alpha,
        temperature=args.temperature,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        schedule=args.schedule,
        average=min(args.average_epochs, 2 if args.quick else args.epochs),
    )
    fit(
        student,
        features,
        y_transfer,
        config,
        seed=student_seed(args),
        teacher_logits=teacher_logits,
    )
    del features
    # The runtime's featurizer: the most frequent train words get rows of their own.
    words = frequent_words(train_texts, args.word_rows)
    student_featurizer = dataclasses.replace(student_featurizer, words=words)
    featurizer = Featurizer(student_featurizer)
    occurrences = [featurizer.occurrences(tokenize(text)) for text in train_texts]
    rng = np.random.default_rng(args.seed)
    sample = rng.choice(len(train_texts), min(500, len(train_texts)), False)
    representative = [occurrences[i] for i in np.sort(sample)]
    filled = [len(o.ids) for o in occurrences]
    log(
        f"[{data.name}] feature occurrences per train sentence: p50"
        f" {np.percentile(filled, 50):.0f}, p99 {np.percentile(filled, 99):.0f}"
    )
    for mode, name in (("float32", "float"), ("int8", "int8")):
        blob = to_tflite(student, representative, mode, featurizer)
        path = work / f"student-{mode}.tflite"
        path.write_bytes(blob)
        # What the child and bench/latency.py need to feed the file as the runtime would.
        sidecar = path.with_suffix(".featurizer.json")
        sidecar.write_text(json.dumps(student_featurizer.to_json()))
        scores, stats = _run_child("tflite", path, eval_texts, timed, work, args.latency_n)
        finish(name, scores, stats, len(blob))
    keras.backend.clear_session()

    # Baseline.
    log(f"[{data.name}] svm")
    svm = train_svm(train_texts, y_train)
    svm_path = work / "svm.pkl"
    with open(svm_path, "wb") as handle:
        pickle.dump(svm, handle)
    scores, stats = _run_child("svm", svm_path, eval_texts, timed, work, args.latency_n)
    finish("svm", scores, stats, svm_path.stat().st_size)
    result.seconds = time.time() - started
    return result


ROW_NAMES = {
    "int8": "student int8 TFLite",
    "float": "student float32 TFLite",
    "teacher": "teacher",
    "svm": "TF-IDF + linear SVM",
}


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} kB"


def tradeoff_lines(results: list[Result]) -> list[str]:
    """Under the table: each model's in-scope accuracy / oos recall at every threshold cost
    of :data:`OOS_COSTS`, so that the operating point is a visible choice."""
    lines: list[str] = []
    for r in results:
        for key, row in r.rows.items():
            if row.tradeoff:
                points = "; ".join(
                    f"≤ {cost:g}: {acc:.1f} / {recall:.1f}"
                    if cost
                    else f"none: {acc:.1f} / {recall:.1f}"
                    for cost, acc, recall in row.tradeoff
                )
                lines.append(
                    f"{r.dataset} {ROW_NAMES[key]}, threshold cost → in-scope / oos %: {points}"
                )
    return ["", *lines] if lines else []


def cold_lines(results: list[Result]) -> list[str]:
    """Under the table: each model's p50 / p99 in the first timed pass, when most words
    are new to the student's hash cache (the table gives the second pass)."""
    lines = [
        f"{r.dataset} {ROW_NAMES[key]}, first pass p50 / p99 µs:"
        f" {row.cold_us[0]:.0f} / {row.cold_us[1]:.0f}"
        for r in results
        for key, row in r.rows.items()
        if row.cold_us[0]
    ]
    return ["", *lines] if lines else []


def teacher_label(args: argparse.Namespace, names: list[str]) -> str:
    """The teacher row's name: ``minilm``, and which data sets had another encoder."""
    others = {n: e.name for n in names if (e := teacher_encoder(args, n))}
    if not others:
        return args.teacher
    if len(others) == len(names):
        return ", ".join(sorted(set(others.values())))
    return args.teacher + "".join(f", {e} on {n}" for n, e in others.items())


def table(results: list[Result], teacher: str) -> str:
    """One markdown table: a row per model, a column group per data set."""
    head = ["model"]
    for r in results:
        has_oos = any(row.oos_recall is not None for row in r.rows.values())
        acc = "in-scope / oos" if has_oos else "acc"
        head += [f"{r.dataset} {acc} %", "bytes", "p50 µs", "p99 µs", "RSS MB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, title in ROW_NAMES.items():
        cells = [title + (f" ({teacher})" if key == "teacher" else "")]
        for r in results:
            row = r.rows.get(key)
            if row is None:
                cells += ["-"] * 5
                continue
            acc = f"{row.accuracy:.1f}"
            if row.oos_recall is not None:
                acc += f" / {row.oos_recall:.1f}"
            cells += [
                acc,
                _size(row.size),
                f"{row.p50_us:.0f}",
                f"{row.p99_us:.0f}",
                f"{row.rss_mb:.0f}",
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line; its defaults are the benchmark's recipe."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--datasets", default="snips,hwu64,clinc150")
    parser.add_argument("--teacher", choices=("mlp", "minilm"), default="minilm")
    parser.add_argument("--quick", action="store_true", help="2 epochs each: a smoke run")
    parser.add_argument(
        "--finetune",
        default="snips=1,hwu64=1",
        help="epochs of end-to-end MiniLM fine-tuning before the teacher's head: N, or per "
        "data set as snips=1,hwu64=0",
    )
    parser.add_argument(
        "--finetune-lr",
        default="",
        help="the encoder's fine-tuning rate: R, or per data set as snips=5e-5 (default 1e-4)",
    )
    parser.add_argument(
        "--teacher-encoder",
        default="",
        help="a sentence-transformers model folder to use instead of MiniLM: PATH, or per data"
        " set as snips=PATH (all-mpnet-base-v2; bench/README says where to get it)",
    )
    parser.add_argument("--teacher-epochs", type=int, default=15, help="teacher head epochs")
    parser.add_argument(
        "--teacher-threads",
        type=int,
        default=None,
        help="torch threads of the MiniLM teacher (1 is steadier on a shared 2-core machine)",
    )
    parser.add_argument(
        "--teacher-cache",
        type=Path,
        default=None,
        help="trained teachers and their transfer-set logits (default WORK/teachers)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--student-seed",
        type=int,
        default=None,
        help="the student's own seed (weights, dropout, batch order), to measure how much"
        " its draw moves the result with the teacher and transfer set fixed (default: --seed)",
    )
    parser.add_argument("--epochs", type=int, default=10, help="student epochs")
    parser.add_argument("--hidden", type=int, default=256, help="student hidden width")
    parser.add_argument("--dim", type=int, default=STUDENT_FEATURIZER.dim, help="hash buckets")
    parser.add_argument("--char-max", type=int, default=STUDENT_FEATURIZER.char_max)
    parser.add_argument("--input-dropout", type=float, default=0.2)
    parser.add_argument("--dropout", type=float, default=0.3)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument(
        "--schedule", default="constant", help="student learning rate (convert.distill.SCHEDULES)"
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--average-epochs",
        type=int,
        default=5,
        help="train the student with the mean of its weights over its last N epochs",
    )
    parser.add_argument("--alpha", type=float, default=0.3)
    parser.add_argument("--temperature", type=float, default=3.0)
    parser.add_argument(
        "--dropout-copies",
        type=int,
        default=1,
        help="word-dropped copies of each train sentence in the transfer set",
    )
    parser.add_argument(
        "--swap-copies",
        type=int,
        default=0,
        help="copies of each train sentence with two neighbouring words swapped",
    )
    parser.add_argument(
        "--recombine-copies",
        type=int,
        default=0,
        help="same-intent splices (start of one train sentence + end of another) per sentence",
    )
    parser.add_argument(
        "--slot-copies",
        type=int,
        default=0,
        help="copies of each train sentence with slot values swapped for other train values"
        " of the same slot and intent, where the data set tags slots (SNIPS)",
    )
    parser.add_argument(
        "--other-sets",
        default="hwu64,clinc150",
        help="the data sets whose transfer set also holds the other data sets' train"
        " sentences (default: %(default)s; SNIPS's seven intents gain from leaving them out)",
    )
    parser.add_argument(
        "--no-other-sets",
        action="store_true",
        help="leave the other data sets' sentences out of every transfer set",
    )
    parser.add_argument(
        "--word-rows",
        type=int,
        default=4096,
        help="the most frequent train words that get a first-layer row of their own (0: none)",
    )
    parser.add_argument(
        "--word-filters",
        type=int,
        default=128,
        help="filters of the student's word-vector branch (0: no branch)",
    )
    parser.add_argument("--word-window", type=int, default=3, help="words the branch reads at once")
    parser.add_argument(
        "--lexicon",
        choices=("transfer", "minilm"),
        default="minilm",
        help="words with a vector: the transfer set's, or those and MiniLM's whole words",
    )
    parser.add_argument(
        "--neighbour-copies",
        type=int,
        default=4,
        help="copies of each train sentence with words swapped for their MiniLM neighbours,"
        " labelled by the teacher (needs the word branch)",
    )
    parser.add_argument(
        "--teacher-vectors",
        choices=("tuned", "always", "never"),
        default="tuned",
        help="the branch also reads each word as the MiniLM teacher's encoder makes it:"
        " when --finetune has tuned it to the data set (default), always, or never",
    )
    parser.add_argument(
        "--oos-cost",
        type=float,
        default=1.0,
        help="points of val in-scope accuracy the table's out-of-scope threshold may cost",
    )
    parser.add_argument("--latency-n", type=int, default=1000)
    parser.add_argument("--root", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=None, help="scratch folder")
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--child", nargs=5, help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.child:
        kind, model, texts, out, n = args.child
        _child(kind, model, texts, out, int(n))
        return 0
    from convert.distill import FitConfig

    try:  # the trainer's own check, so the choices are listed in one place
        FitConfig(epochs=args.epochs, schedule=args.schedule, average=args.average_epochs)
    except ValueError as err:
        parser.error(str(err))
    if args.quick:
        args.latency_n = min(args.latency_n, 200)
    # -v also shows the teacher's fine-tuning progress (minutes per epoch on a small CPU).
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(asctime)s %(message)s"
    )
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    root = args.root or default_root()
    names = [n.strip() for n in args.datasets.split(",") if n.strip()]
    for name in names:
        if name not in ALL:
            parser.error(f"unknown data set {name} (expected {', '.join(ALL)})")
    if problem := check_per_dataset(args, names):
        parser.error(problem)
    loaded = {name: ALL[name](root) for name in ALL}
    base = args.work or Path(tempfile.gettempdir()) / "voice-agent-bench"
    started = time.time()
    results = []
    for name in names:
        work = base / name
        work.mkdir(parents=True, exist_ok=True)
        with_others = name in args.other_sets.lower().split(",") and not args.no_other_sets
        others = [d for n, d in loaded.items() if n != name] if with_others else []
        results.append(bench_dataset(loaded[name], others, args, work))
        print(f"{loaded[name].name}: {results[-1].seconds:.0f} s", file=sys.stderr, flush=True)
    print(table(results, teacher_label(args, names)))
    for line in tradeoff_lines(results) + cold_lines(results):
        print(line)
    print(f"\n{len(names)} data set(s) in {time.time() - started:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
