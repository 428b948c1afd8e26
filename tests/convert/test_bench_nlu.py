"""bench/nlu.py's out-of-scope operating points: the threshold keeps to its cost on val."""

from __future__ import annotations

import numpy as np

from agent.featurize import FeaturizerConfig
from bench.nlu import (
    OOS_COSTS,
    Result,
    Row,
    accuracy,
    build_parser,
    choose_threshold,
    cold_lines,
    neighbour_copies,
    new_student,
    slot_swaps,
    tradeoff_lines,
)

OOS = 2


def _scores(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Three-class scores where out-of-scope rows are less confident, with overlap."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 3, 2000)
    top = np.where(truth == OOS, rng.uniform(0.3, 0.8, 2000), rng.uniform(0.5, 1.0, 2000))
    guess = np.where(rng.random(2000) < 0.9, truth, (truth + 1) % 3)
    scores = np.full((2000, 3), 0.0)
    scores[np.arange(2000), guess] = top
    scores[np.arange(2000), (guess + 1) % 3] = 1 - top
    return scores, truth


def test_threshold_costs_at_most_its_points_of_in_scope_accuracy() -> None:
    scores, truth = _scores()
    base, base_recall = accuracy(scores, truth, OOS, None)
    recalls = []
    for cost in (1.0, 0.5, 0.25):
        cut = choose_threshold(scores, truth, OOS, cost)
        in_scope, recall = accuracy(scores, truth, OOS, cut)
        assert base - cost <= in_scope <= base
        assert recall is not None and base_recall is not None and recall > base_recall
        recalls.append(recall)
    assert recalls == sorted(recalls, reverse=True)  # a dearer threshold rejects more


def test_tradeoff_lines_name_the_model_and_every_cost() -> None:
    row = Row(93.7, 69.2, 1, 1.0, 2.0, 3.0, 0.5, ((1.0, 93.7, 69.2), (0.0, 94.36, 37.1)))
    plain = Row(97.0, None, 1, 1.0, 2.0, 3.0)
    lines = tradeoff_lines([Result("CLINC150", {"int8": row}), Result("SNIPS", {"int8": plain})])
    assert lines == [
        "",
        "CLINC150 student int8 TFLite, threshold cost → in-scope / oos %: ≤ 1: 93.7 / 69.2; "
        "none: 94.4 / 37.1",
    ]
    assert OOS_COSTS[-1] == 0.0  # the last point is "no threshold"


def test_cold_lines_give_the_first_pass_of_each_timed_model() -> None:
    timed = Row(97.0, None, 1, 70.0, 150.0, 3.0, cold_us=(180.4, 420.6))
    untimed = Row(97.0, None, 1, 70.0, 150.0, 3.0)
    lines = cold_lines([Result("SNIPS", {"int8": timed, "svm": untimed})])
    assert lines == ["", "SNIPS student int8 TFLite, first pass p50 / p99 µs: 180 / 421"]


def test_neighbour_copies_swap_words_for_near_ones_only() -> None:
    # "lamp" and "light" point the same way, "music" and "on" elsewhere; "on" is too short
    # to be swapped at all.
    lexicon = ("lamp", "light", "music", "on")
    vectors = np.array([[0, 0], [0, 0], [1, 0.1], [1, 0], [0, 1], [-1, 0]], np.float32)
    texts = ["light on", "music on"]
    copies = neighbour_copies(texts, 40, 0, lexicon, vectors)
    assert set(copies) == {"lamp on"}  # unchanged copies are left out
    assert 0 < len(copies) < 40
    assert copies == neighbour_copies(texts, 40, 0, lexicon, vectors)
    assert neighbour_copies(texts, 0, 0, lexicon, vectors) == []


def test_slot_swaps_trade_values_of_one_slot_within_one_intent() -> None:
    texts = ["play kind of blue", "play so what", "find kind of blue", "hello there"]
    tags = [
        ("O", "B-album", "I-album", "I-album"),
        ("O", "B-album", "I-album"),
        ("O", "B-movie", "I-movie", "I-movie"),
        ("O", "O"),
    ]
    labels = np.array([0, 0, 1, 2])
    copies, intents = slot_swaps(texts, tags, labels, 20, 0)
    # Only the two albums of intent 0 trade places: the movie has no other value in its
    # intent and the untagged sentence has no slot, so their copies equal them and are left out.
    assert set(copies) == {"play so what", "play kind of blue"}
    assert len(copies) == 40
    assert intents.tolist() == [0] * 40
    assert slot_swaps(texts, tags, labels, 20, 0)[0] == copies
    assert slot_swaps(texts, [], labels, 0, 0)[0] == []  # a set without tags asks for none
    assert slot_swaps(texts, [], labels, 20, 0)[0] == []  # and gets none when it asks


def test_one_seed_builds_one_student() -> None:
    """The student's initial weights come from its seed, not from what Keras drew before;
    --student-seed draws them apart from --seed (which also draws the transfer set)."""
    vectors = np.random.default_rng(0).normal(size=(10, 8)).astype(np.float32)
    featurizer = FeaturizerConfig(dim=64, lexicon=tuple(f"w{i}" for i in range(8)))

    def weights(*seeds: str) -> list[np.ndarray]:
        args = build_parser().parse_args(
            [*seeds, "--dim", "64", "--hidden", "16", "--word-filters", "8"]
        )
        return new_student(args, 3, vectors, featurizer).get_weights()

    first, again = weights("--seed", "4"), weights("--seed", "4")
    other, chosen = weights("--seed", "5"), weights("--seed", "5", "--student-seed", "4")
    assert len(first) == len(again) > 4
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(first, chosen, strict=True))
    assert not np.array_equal(first[-2], other[-2])  # the logits kernel
