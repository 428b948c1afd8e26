"""Readers for the public intent data sets in ``../shared/datasets`` (SNIPS, HWU64, CLINC150).

Each reader returns train, test and (where the set has one) val splits as lists of
``(text, label)``; CLINC150's out-of-scope utterances carry the label ``oos``. HWU64 has no
val split (empty list): tune on train only.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

OOS = "oos"


@dataclass(frozen=True)
class Dataset:
    name: str
    train: list[tuple[str, str]]
    test: list[tuple[str, str]]
    has_oos: bool = False
    val: list[tuple[str, str]] = field(default_factory=list)
    """Held-out split for choosing thresholds and epochs; never trained on."""
    train_tags: list[tuple[str, ...]] = field(default_factory=list)
    """BIO slot tags of each train sentence's words, where the set has them (SNIPS)."""


def default_root() -> Path:
    """``shared/datasets`` beside the checkout, as laid out for developers and CI."""
    return Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _snips_split(folder: Path) -> list[tuple[str, str]]:
    texts = (folder / "seq.in").read_text(encoding="utf-8").splitlines()
    labels = (folder / "label").read_text(encoding="utf-8").splitlines()
    return [(t.strip(), lab.strip()) for t, lab in zip(texts, labels, strict=True)]


def _snips_tags(folder: Path) -> list[tuple[str, ...]]:
    return [tuple(line.split()) for line in (folder / "seq.out").read_text("utf-8").splitlines()]


def snips(root: Path) -> Dataset:
    return Dataset(
        "SNIPS",
        _snips_split(root / "snips/train"),
        _snips_split(root / "snips/test"),
        val=_snips_split(root / "snips/valid"),
        train_tags=_snips_tags(root / "snips/train"),
    )


def _hwu_split(folder: Path) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for path in sorted(folder.glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter=";"):
                text = (row["answer_from_anno"] or "").strip()
                if text:
                    rows.append((text, f"{row['scenario']}_{row['intent']}"))
    return rows


def hwu64(root: Path) -> Dataset:
    return Dataset("HWU64", _hwu_split(root / "hwu64/train"), _hwu_split(root / "hwu64/test"))


def clinc150(root: Path) -> Dataset:
    data = json.loads((root / "clinc150/data_full.json").read_text(encoding="utf-8"))
    train = [(t, lab) for t, lab in data["train"] + data["oos_train"]]
    test = [(t, lab) for t, lab in data["test"] + data["oos_test"]]
    val = [(t, lab) for t, lab in data["val"] + data["oos_val"]]
    return Dataset("CLINC150", train, test, has_oos=True, val=val)


ALL = {"snips": snips, "hwu64": hwu64, "clinc150": clinc150}
