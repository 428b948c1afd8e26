"""The build report: ``report.json`` for machines, ``report.md`` and a confusion-matrix PNG
for people."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
CONFUSION_PNG = "confusion.png"


def _kb(size: int) -> str:
    return f"{size / 1024:.1f} KiB"


def stage_table(stages: list[dict[str, Any]]) -> list[str]:
    """Markdown rows of the per-stage table (shared by report.md and the CLI summary)."""
    rows = [
        "| stage | accuracy | size | p50 | p99 | note |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for s in stages:
        rows.append(
            f"| {s['stage']} | {s['accuracy']:.2%} | {_kb(s['bytes'])} | {s['p50_us']:.0f} µs"
            f" | {s['p99_us']:.0f} µs | {s['note']} |"
        )
    return rows


def shipped_lines(shipped: dict[str, Any]) -> list[str]:
    """What ``intent.tflite`` is, and what it makes of the spec's own sentences (shared by
    report.md and the CLI summary)."""
    if shipped["refit"]:
        lines = [
            f"`intent.tflite` is the same recipe refit on all {shipped['trained_on']} sentences,"
            " the held-out ones included, with the threshold calibrated above."
        ]
    else:
        lines = ["`intent.tflite` is the last stage above (built with refitting off)."]
    lines.append(
        f"Of the spec's {shipped['sentences']} sentences (commands and out-of-scope) it gets"
        f" {shipped['right']} right ({shipped['right'] / max(shipped['sentences'], 1):.2%})."
    )
    wrong = shipped["wrong"]
    if wrong:
        more = shipped["sentences"] - shipped["right"] - len(wrong)
        lines += ["", "| sentence | intent | shipped model says |", "|---|---|---|"]
        lines += [f"| {w['text']} | {w['intent']} | {w['got']} |" for w in wrong]
        if more:
            lines += ["", f"and {more} more (report.json lists the first {len(wrong)})."]
    return lines


def markdown(report: dict[str, Any]) -> str:
    counts = report["counts"]
    occ = report["occurrences"]
    rej = report["rejection"]
    lines = [
        f"# Model report: {report['name']}",
        "",
        f"Built {report['created']} from `{report['spec']}`"
        f" (sha256 `{report['spec_sha256'][:12]}`).",
        f"{counts['sentences']} in-scope and {counts['out_of_scope']} out-of-scope sentences;"
        f" trained on {counts['train']} ({counts['balanced']} with small intents repeated,"
        f" +{counts['transfer'] - counts['balanced']} perturbed copies labelled by the teacher),"
        f" scored on {counts['held_out']} held out."
        + (
            f" The student also reads each word through {counts['lexicon']} pretrained word"
            f" vectors ({report['options']['word_vectors']}), windows of three words."
            if counts.get("lexicon")
            else ""
        ),
        "",
        "## Stages",
        "",
        "Accuracy is arg-max over every label on the held-out split; latency is one sentence,"
        " featurize + invoke, one thread, on the build machine. The TFLite stages take a"
        " sentence as its feature occurrences (a training sentence has"
        f" {occ['p50']} at the median, {occ['p99']} at the 99th percentile; they are fed in"
        f" blocks of {occ['slots_step']} slots, up to {occ['slots_max']}) and gather only"
        " those rows of the first layer.",
        "",
        *stage_table(report["stages"]),
        "",
        "## Out-of-scope rejection",
        "",
        f"- confidence threshold: {rej['threshold']:.2f} (calibrated on the held-out split)",
        f"- in-scope sentences accepted with the right intent: {rej['in_scope_accuracy']:.2%}",
        f"- in-scope sentences wrongly rejected: {rej['in_scope_rejected']:.2%}",
        f"- out-of-scope sentences rejected: {rej['out_of_scope_rejected']:.2%}",
        "",
        "## Shipped model",
        "",
        *shipped_lines(report["shipped"]),
        "",
        f"## Per intent (the {report['stages'][-1]['stage']} above, threshold applied)",
        "",
        "| intent | precision | recall | F1 | held out |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, s in report["per_intent"].items():
        lines.append(
            f"| {label} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f}"
            f" | {s['support']} |"
        )
    lines += ["", f"![confusion matrix]({CONFUSION_PNG})", ""]
    return "\n".join(lines)


def confusion_png(path: Path, labels: list[str], matrix: list[list[int]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.array(matrix, dtype=float)
    rows = data.sum(axis=1, keepdims=True)
    share = np.divide(data, rows, out=np.zeros_like(data), where=rows > 0)
    size = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90)
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            if data[i, j]:
                color = "white" if share[i, j] > 0.5 else "black"
                ax.text(j, i, int(data[i, j]), ha="center", va="center", fontsize=7, color=color)
    ax.set_title("held out, scored model")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)


def write_report(folder: Path, report: dict[str, Any]) -> None:
    (folder / REPORT_JSON).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (folder / REPORT_MD).write_text(markdown(report), encoding="utf-8")
    confusion_png(folder / CONFUSION_PNG, report["labels"], report["confusion"])
