"""The conversion pipeline: spec -> sentences -> teacher -> student -> pruned -> int8 -> files.

Each stage is scored on the same held-out split and the figures go into the report, so a
user can see what distillation, pruning and quantization each bought; the file written is
the same recipe refit on every sentence, so no command of the spec is unknown to it.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import random
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import keras
import numpy as np

from agent import __version__
from agent.featurize import Featurizer, FeaturizerConfig, tokenize
from agent.metadata import FORMAT, GRAMMAR_FILE, METADATA_FILE, NONE_LABEL, TFLITE_FILE
from agent.tflite import MAX_SLOTS, SLOT_STEP
from convert.distill import FitConfig, fit
from convert.evaluate import (
    Rejection,
    StageResult,
    TFLiteModel,
    calibrate,
    confusion,
    decide,
    latency_us,
    per_class_f1,
)
from convert.grammar import vosk_grammar, vosk_vocabulary
from convert.model import MlpConfig, build_mlp
from convert.prune import MagnitudePruner, sparsity
from convert.quantize import Mode, frequent_words, to_tflite
from convert.report import write_report
from convert.sentences import NONE_INTENT, Example, expand_negatives, expand_spec
from convert.spec import Spec
from convert.stamp import metadata_text
from convert.vectors import MINILM, WordVectors, minilm_vectors, read_vectors

Progress = Callable[[str], None]
_WRONG_LISTED = 50
"""Spec sentences that the shipped model gets wrong, listed in the report (the rest counted)."""


@dataclass(frozen=True)
class BuildOptions:
    """Every knob of a conversion; the defaults build the shipped example models."""

    seed: int = 0
    sentences_per_intent: int = 400
    negatives: int = 1200
    validation: float = 0.2
    featurizer: FeaturizerConfig = field(default_factory=FeaturizerConfig)
    student: MlpConfig = field(default_factory=lambda: MlpConfig(hidden=96))
    epochs: int = 30
    teacher: str = "mlp"
    """``none``, ``mlp`` (a wider network, no extra packages) or ``minilm``."""
    alpha: float = 0.3
    temperature: float = 3.0
    noise: int = 300
    """Generated out-of-scope sentences (slot values alone, random strings of spec words)."""
    salad: int = 600
    """Generated out-of-scope word salads of the spec's own sentences (:func:`salad`)."""
    augment: int = 1
    """Perturbed copies of each training sentence that the teacher labels (word drops)."""
    prune: float = 0.5
    """Target sparsity of the pruned student (0 = no pruning)."""
    prune_epochs: int = 10
    quantize: Mode = "int8"
    refit: bool = True
    """Ship the recipe refit on every sentence, the held-out ones included, once the split
    has scored it: a command the templates write out must not be unknown to the model
    because the split held it out. The threshold stays the one the split calibrated."""
    word_vectors: str = ""
    """Pretrained word vectors for the student's word branch: ``minilm``, a word-vector
    text file, or empty for no branch (:mod:`convert.vectors`)."""
    word_lexicon: int = 20000
    """Words beside the spec's own: the head of a vector file, or MiniLM's first ones."""
    word_rows: int = 4096
    """The most frequent training words that get a first-layer row of their own, so that a
    command feeds ~1 occurrence per word instead of ~20 (:func:`convert.quantize.word_rows`;
    the same answers, fewer multiply-adds)."""


@dataclass
class BuildResult:
    """What a build produced, for the CLI's summary."""

    directory: Path
    stages: list[StageResult]
    rejection: Rejection
    labels: list[str]
    train_count: int
    validation_count: int
    report: dict[str, Any]


def _by_label(examples: list[Example]) -> dict[str, list[Example]]:
    by_label: dict[str, list[Example]] = {}
    for example in examples:
        by_label.setdefault(example.intent, []).append(example)
    return by_label


def split(
    examples: list[Example], fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    """Stratified hold-out: ``fraction`` of each label (at least one when it has two)."""
    by_label = _by_label(examples)
    train: list[Example] = []
    held: list[Example] = []
    for label in sorted(by_label):
        items = list(by_label[label])
        random.Random(f"{seed}:split:{label}").shuffle(items)
        n = round(len(items) * fraction)
        n = min(max(n, 1), len(items) - 1) if len(items) >= 2 else 0
        held.extend(items[:n])
        train.extend(items[n:])
    return train, held


def balance(examples: list[Example], share: float = 0.3) -> list[Example]:
    """Repeat the sentences of small intents until each has ``share`` of the largest's
    count: an intent with few phrasings must not lose to one with a thousand."""
    by_label = _by_label(examples)
    target = int(max((len(v) for v in by_label.values()), default=0) * share)
    out: list[Example] = []
    for items in by_label.values():
        repeats = max(1, -(-target // len(items)))
        out.extend(items * repeats)
    return out


def noise(
    spec: Spec, vocabulary: list[str], known: set[str], count: int, seed: int
) -> list[Example]:
    """Out-of-scope sentences made from the spec's own words: a slot value alone ("kitchen")
    and short random word strings, which is what a grammar-constrained recognizer makes
    of speech that is not a command. Any that happen to be a real command are dropped."""
    rng = random.Random(f"{seed}:noise")
    texts: set[str] = set()
    for slot_list in spec.slots.values():
        for value in slot_list.values[:20]:
            texts.update(value.synonyms[:2])
    words = [w for w in vocabulary if not w.isdigit()]
    # A string holding every word of some command may be that command in another order.
    commands = {frozenset(text.split()) for text in known}
    attempts = 0
    while words and len(texts) < count and attempts < count * 10:
        attempts += 1
        candidate = [rng.choice(words) for _ in range(rng.randint(1, 5))]
        bag = frozenset(candidate)
        if not any(command <= bag for command in commands):
            texts.add(" ".join(candidate))
    return [Example(t, NONE_INTENT) for t in sorted(texts - known)[:count]]


def salad(
    spec: Spec, examples: list[Example], taken: set[str], count: int, seed: int
) -> list[Example]:
    """Out-of-scope word salads made of the spec's own sentences, as a recognizer bound to
    the grammar hears a conversation or the TV: pieces of two sentences run together
    ("lights on in the play some music"), a piece said twice ("off the off the"), and a
    command naming two values of one list slot ("kitchen bedroom lights off"). A candidate that
    holds every word but at most one of some command (a command with words around it,
    reordered, or without its slot value) is left out, except the two-value case, which no
    single command can be."""
    rng = random.Random(f"{seed}:salad")
    sentences = [e.text.split() for e in examples] + [
        s.split() for s in spec.negative_sentences if s.strip()
    ]
    commands = {frozenset(e.text.split()) for e in examples}
    # Lists of names only: two numbers side by side ("twenty two") can be one number.
    synonyms = {
        name: [(v.value, raw) for v in slot_list.values for raw in v.synonyms]
        for name, slot_list in spec.slots.items()
        if not any(isinstance(v.value, int) for v in slot_list.values)
    }
    with_slots = [e for e in examples if any(span.name in synonyms for span in e.slots)]
    texts: set[str] = set()
    attempts = 0
    while sentences and len(texts) < count and attempts < count * 20:
        attempts += 1
        kind = rng.random()
        if kind < 0.25 and with_slots:
            example = rng.choice(with_slots)
            span = rng.choice([span for span in example.slots if span.name in synonyms])
            others = [raw for value, raw in synonyms[span.name] if value != span.value]
            if not others:
                continue
            extra = rng.choice(others)
            at = span.start if rng.random() < 0.5 else span.end
            pad = (extra + " ") if at == span.start else (" " + extra)
            texts.add(" ".join((example.text[:at] + pad + example.text[at:]).split()))
            continue
        first = _piece(rng.choice(sentences), rng)
        # A piece said twice, or run into a piece of another sentence.
        candidate = first * 2 if kind < 0.4 else first + _piece(rng.choice(sentences), rng)
        # Nor one that misses a single word of a command: "no more light in the" is that
        # command without its room, and teaching it as chatter costs the command itself.
        bag = frozenset(candidate)
        if not any(len(command - bag) <= 1 for command in commands):
            texts.add(" ".join(candidate))
    return [Example(t, NONE_INTENT) for t in sorted(texts - taken)[:count]]


def _piece(words: list[str], rng: random.Random) -> list[str]:
    """A contiguous run of one to all-but-one of ``words`` (all of a one-word sentence)."""
    if len(words) < 2:
        return list(words)
    length = rng.randint(1, len(words) - 1)
    start = rng.randrange(len(words) - length + 1)
    return words[start : start + length]


def augment(texts: list[str], copies: int, seed: int) -> list[str]:
    """Copies of sentences with one word dropped: the teacher labels them, the student
    learns to cope with a word the recognizer missed."""
    rng = random.Random(f"{seed}:augment")
    out: list[str] = []
    for _ in range(copies):
        for text in texts:
            words = text.split()
            if len(words) < 3:
                continue
            del words[rng.randrange(len(words))]
            out.append(" ".join(words))
    return out


def _teacher(name: str) -> Any:
    from convert import teacher

    # A spec has a few thousand sentences: a teacher twice the student's width and
    # features already knows them better, and builds in seconds rather than minutes.
    features = FeaturizerConfig(dim=8192, char_max=5)
    if name == "mlp":
        return teacher.MlpTeacher(features, hidden=512, epochs=12)
    if name == "minilm":
        return teacher.MiniLMTeacher(features, hidden=512, epochs=12)
    raise ValueError(f"unknown teacher '{name}' (expected none, mlp or minilm)")


def _word_vectors(
    options: BuildOptions, vocabulary: list[str], progress: Progress
) -> WordVectors | None:
    """The word branch's vectors, if ``options.word_vectors`` asks for them: the spec's
    words are always in its lexicon when the source has them."""
    if not options.word_vectors:
        return None
    progress(f"reading word vectors from {options.word_vectors}")
    # The words as the featurizer will see them: "can't" is "cant".
    words = sorted({token for word in vocabulary for token in tokenize(word)})
    if options.word_vectors == MINILM:
        vectors = minilm_vectors(words, limit=options.word_lexicon)
    else:
        vectors = read_vectors(Path(options.word_vectors), words, options.word_lexicon)
    known = set(vectors.words)
    missing = [w for w in words if w not in known]
    progress(
        f"word branch: {len(vectors.words)} words of {vectors.matrix.shape[1]} dimensions;"
        f" {len(missing)} of the spec's {len(words)} words have no vector"
        + (f" ({', '.join(missing[:8])}{', ...' if len(missing) > 8 else ''})" if missing else "")
    )
    return vectors


def training_set(spec: Spec, options: BuildOptions) -> tuple[list[Example], list[Example]]:
    """The labelled commands and the out-of-scope sentences a build trains on: the spec's
    ``none:`` sentences, :func:`noise` and :func:`salad`."""
    examples = expand_spec(spec, options.sentences_per_intent, options.seed)
    negatives = expand_negatives(spec, options.negatives, options.seed) if spec.negatives else []
    known = {e.text for e in examples}
    if options.noise:
        negatives += noise(spec, vosk_vocabulary(spec), known, options.noise, options.seed)
    if options.salad:
        taken = known | {e.text for e in negatives}
        negatives += salad(spec, examples, taken, options.salad, options.seed)
    return examples, negatives


def build(spec: Spec, output: Path, options: BuildOptions, progress: Progress) -> BuildResult:
    """Train, compress and write ``output/`` for ``spec``; replaces ``output`` atomically."""
    # A fresh Keras state, so that a second build in the same process draws the same
    # random numbers as the first: the same spec and seed give the same bytes.
    keras.backend.clear_session(free_memory=True)
    keras.utils.set_random_seed(options.seed)
    examples, negatives = training_set(spec, options)
    vocabulary = vosk_vocabulary(spec)
    labels = [intent.name for intent in spec.intents] + ([NONE_LABEL] if negatives else [])
    index = {label: i for i, label in enumerate(labels)}
    none = index.get(NONE_LABEL, -1)
    train, held = split(examples + negatives, options.validation, options.seed)
    branch = _word_vectors(options, vocabulary, progress)
    progress(
        f"{len(examples)} sentences for {len(spec.intents)} intents, {len(negatives)} out-of-scope;"
        f" training on {len(train)}, holding out {len(held)}"
    )
    held_texts = [e.text for e in held]
    y_held = np.array([index[e.intent] for e in held], np.int32)
    scored = _train(train, index, options, progress, "", (held_texts, y_held), branch)
    rejection = calibrate(scored.probs, y_held, none, floor=0.5)
    progress(
        f"threshold {rejection.threshold:.2f}: in-scope accuracy {rejection.in_scope_accuracy:.1%},"
        f" out-of-scope rejected {rejection.out_of_scope_rejected:.1%}"
    )
    shipped = scored
    if options.refit:
        progress(f"refitting on all {len(train) + len(held)} sentences")
        shipped = _train(train + held, index, options, progress, "refit ", None, branch)
    content, runtime = shipped.content, shipped.runtime
    shipped_model = TFLiteModel(content, runtime)
    # What the shipped file makes of the spec's own sentences: with the refit, trained on
    # all of them, it should accept every command its templates write out.
    every = examples + negatives
    spec_pred = decide(
        shipped_model.probabilities([e.text for e in every]), none, rejection.threshold
    )
    wrong = [
        {"text": e.text, "intent": e.intent, "got": labels[p] if p >= 0 else NONE_LABEL}
        for e, p in zip(every, spec_pred, strict=True)
        if p != index[e.intent]
    ]
    probes = held_texts[:: max(1, len(held_texts) // 24)]
    probe_probs = shipped_model.probabilities(probes) if probes else []
    pred = decide(scored.probs, none, rejection.threshold)
    # Rejected in-scope answers count as the none column of the confusion matrix.
    cm_labels = labels if none >= 0 else [*labels, NONE_LABEL]
    cm_pred = np.where(pred < 0, len(cm_labels) - 1, pred)
    report = {
        "name": spec.name,
        "spec": os.path.basename(spec.path),
        "spec_sha256": spec.sha256,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "options": asdict(options),
        "counts": {
            "sentences": len(examples),
            "out_of_scope": len(negatives),
            "train": len(train),
            "held_out": len(held),
            "balanced": scored.balanced,
            "transfer": scored.transfer,
            "lexicon": len(branch.words) if branch is not None else 0,
        },
        "stages": [s.to_json() for s in scored.stages],
        # Feature occurrences per training sentence: the slots of the TFLite input a command
        # fills (at most MAX_SLOTS, in blocks of SLOT_STEP), which its invoke time follows.
        "occurrences": {
            "p50": int(np.percentile(shipped.filled, 50)),
            "p99": int(np.percentile(shipped.filled, 99)),
            "max": max(shipped.filled),
            "slots_max": MAX_SLOTS,
            "slots_step": SLOT_STEP,
        },
        "rejection": asdict(rejection),
        "shipped": {
            "refit": options.refit,
            "trained_on": len(train) + len(held) if options.refit else len(train),
            "sentences": len(every),
            "right": len(every) - len(wrong),
            "wrong": wrong[:_WRONG_LISTED],
        },
        "per_intent": per_class_f1(cm_labels, y_held.copy(), cm_pred),
        "labels": cm_labels,
        # Outputs of the shipped file on a few held-out sentences: the runtime's tests check
        # that the Pi's interpreter and featurizer give the same numbers.
        "probes": [
            {"text": text, "probabilities": [round(float(p), 6) for p in row]}
            for text, row in zip(probes, probe_probs, strict=True)
        ],
        "confusion": confusion(
            len(cm_labels), np.where(y_held < 0, len(cm_labels) - 1, y_held), cm_pred
        ).tolist(),
    }
    metadata = {
        "format": FORMAT,
        "name": spec.name,
        "language": spec.language,
        "version": spec.version,
        "spec_sha256": spec.sha256,
        "voice_agent": __version__,
        "labels": labels,
        "threshold": rejection.threshold,
        "featurizer": runtime.config.to_json(),
        "slots": {
            name: [{"value": v.value, "synonyms": list(v.synonyms)} for v in slot_list.values]
            for name, slot_list in spec.slots.items()
        },
        "intents": {
            intent.name: {
                "slots": list(intent.slots),
                "required": list(intent.required),
                "actions": [asdict(action) for action in intent.actions],
            }
            for intent in spec.intents
        },
        "tflite_sha256": hashlib.sha256(content).hexdigest(),
    }
    _write(output, content, metadata, vosk_grammar(spec), report)
    return BuildResult(output, scored.stages, rejection, labels, len(train), len(held), report)


@dataclass
class _Trained:
    """One run of the recipe: the file in the shipped format and how it was made."""

    content: bytes
    runtime: Featurizer
    """The featurizer that feeds the file: the settings plus a row per frequent word."""
    stages: list[StageResult]
    """Each stage scored on the held-out split (none for a refit)."""
    probs: np.ndarray
    """The final file's probabilities on the held-out split (empty for a refit)."""
    balanced: int
    """Training sentences once small intents are repeated (:func:`balance`)."""
    transfer: int
    """Sentences the student learnt from: the balanced ones and their perturbed copies."""
    filled: list[int]
    """Feature occurrences of each training sentence, as the runtime feeds them."""


def _train(
    examples: list[Example],
    index: dict[str, int],
    options: BuildOptions,
    progress: Progress,
    tag: str,
    held: tuple[list[str], np.ndarray] | None,
    branch: WordVectors | None = None,
) -> _Trained:
    """Teacher, distilled student, pruning and quantization on ``examples``; each stage is
    scored on ``held`` (texts and labels) when given. ``tag`` prefixes the progress lines.
    With ``branch`` the student has a word branch over those vectors."""
    train = balance(examples)
    config = options.featurizer
    if branch is not None:
        config = replace(config, lexicon=branch.words)
    featurizer = Featurizer(config)
    train_texts = [e.text for e in train]
    held_texts, y_held = held if held is not None else ([], np.zeros(0, np.int32))
    y_train = np.array([index[e.intent] for e in train], np.int32)
    x_train = featurizer.transform(train_texts)
    n_classes = len(index)
    stages: list[StageResult] = []
    # The model is trained on n-gram vectors; the exported file and the runtime's
    # featurizer add a row per frequent word, for the same answers from fewer slots.
    runtime = Featurizer(replace(config, words=frequent_words(train_texts, options.word_rows)))
    # 300 training sentences calibrate int8; all of them say how many slots a command fills.
    features = [runtime.occurrences(tokenize(text)) for text in train_texts]
    order = np.random.default_rng(options.seed).permutation(len(features))[:300]
    export = partial(to_tflite, representative=[features[i] for i in order], featurizer=runtime)
    filled = [min(len(f.ids), MAX_SLOTS) for f in features]

    def epochs(stage: str, total: int) -> Callable[[int, float], None]:
        return lambda epoch, loss: progress(
            f"[{tag}{stage}] epoch {epoch + 1}/{total} loss {loss:.4f}"
        )

    def score(name: str, model: TFLiteModel, note: str, probs: np.ndarray | None = None) -> None:
        stages.append(_stage(name, model, held_texts, y_held, note, probs))

    # 1. Teacher: a bigger model whose softened outputs teach the student.
    teacher_logits = None
    transfer_texts = train_texts + augment(train_texts, options.augment, options.seed)
    if options.teacher != "none":
        teacher = _teacher(options.teacher)
        progress(f"[{tag}teacher] training {teacher.name}")
        teacher.fit(train_texts, y_train, n_classes, options.seed)
        teacher_logits = teacher.logits(transfer_texts)
        if held is not None:
            t_pred = teacher.logits(held_texts).argmax(1)
            p50, p99 = latency_us(lambda t: teacher.logits([t]), held_texts[:100], rounds=1)
            stages.append(
                StageResult(
                    f"teacher ({teacher.name})",
                    float(np.mean(t_pred == y_held)),
                    teacher.size_bytes(),
                    p50,
                    p99,
                )
            )
    dense, y_transfer = x_train, y_train
    if teacher_logits is not None:
        copies = transfer_texts[len(train_texts) :]
        dense = np.concatenate([x_train, featurizer.transform(copies)])
        y_transfer = np.concatenate([y_train, np.full(len(copies), -1, np.int32)])
    else:
        transfer_texts = train_texts
    # The word branch takes each sentence's word ids beside its n-gram vector.
    x_transfer: Any = dense
    if branch is not None:
        x_transfer = (dense, featurizer.word_id_matrix(transfer_texts))

    # 2. Student, distilled from the teacher (or trained on labels alone).
    student = build_mlp(
        config.dim,
        n_classes,
        options.student,
        word_vectors=branch.table() if branch is not None else None,
        window=config.window,
        positions=config.positions,
    )
    fit(
        student,
        x_transfer,
        y_transfer,
        FitConfig(epochs=options.epochs, alpha=options.alpha, temperature=options.temperature),
        seed=options.seed,
        teacher_logits=teacher_logits,
        on_epoch=epochs("student", options.epochs),
    )
    if held is not None:
        float_model = TFLiteModel(export(student, mode="float32"), runtime)
        score(
            "float student",
            float_model,
            "distilled" if teacher_logits is not None else "labels only",
        )

    # 3. Magnitude pruning, fine-tuned with the same loss.
    final = student
    if options.prune > 0:
        pruned = keras.models.clone_model(student)
        pruned.set_weights(student.get_weights())
        steps = options.prune_epochs * -(-len(y_transfer) // 64)
        pruner = MagnitudePruner(pruned, options.prune, steps)
        fit(
            pruned,
            x_transfer,
            y_transfer,
            FitConfig(
                epochs=options.prune_epochs,
                learning_rate=5e-4,
                alpha=options.alpha,
                temperature=options.temperature,
            ),
            seed=options.seed + 1,
            teacher_logits=teacher_logits,
            pruner=pruner,
            on_epoch=epochs("prune", options.prune_epochs),
        )
        if held is not None:
            pruned_model = TFLiteModel(export(pruned, mode="float32"), runtime)
            gz = len(gzip.compress(pruned_model.content, 9))
            score(
                "pruned student",
                pruned_model,
                f"sparsity {sparsity(pruned):.0%}, {gz} bytes gzipped",
            )
        final = pruned

    # 4. Quantization of the final network, calibrated on real feature vectors.
    content = export(final, mode=options.quantize)
    probs = np.zeros((0, n_classes), np.float32)
    if held is not None:
        final_model = TFLiteModel(content, runtime)
        probs = final_model.probabilities(held_texts)
        score(
            f"{options.quantize} student",
            final_model,
            f"{len(gzip.compress(content, 9))} bytes gzipped",
            probs,
        )
    return _Trained(content, runtime, stages, probs, len(train), len(y_transfer), filled)


def _stage(
    name: str,
    model: TFLiteModel,
    texts: list[str],
    truth: np.ndarray,
    note: str,
    probs: np.ndarray | None = None,
) -> StageResult:
    if probs is None:
        probs = model.probabilities(texts)
    pred = probs.argmax(1)
    p50, p99 = latency_us(model.classify_one, texts[:300])
    return StageResult(name, float(np.mean(pred == truth)), len(model.content), p50, p99, note)


def _write(
    output: Path,
    content: bytes,
    metadata: dict[str, Any],
    grammar: list[str],
    report: dict[str, Any],
) -> None:
    """Write every file into a sibling temporary folder, then swap it into place, so a
    failed build never leaves a half-written model where the daemon would load it."""
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        (staging / TFLITE_FILE).write_bytes(content)
        (staging / METADATA_FILE).write_text(metadata_text(metadata), encoding="utf-8")
        (staging / GRAMMAR_FILE).write_text(
            json.dumps(grammar, ensure_ascii=False, indent=0) + "\n", encoding="utf-8"
        )
        write_report(staging, report)
        old = output.with_name(f".{output.name}.old")
        if output.exists():
            shutil.rmtree(old, ignore_errors=True)
            output.rename(old)
        staging.rename(output)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
