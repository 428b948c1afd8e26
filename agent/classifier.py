"""The runtime intent classifier: transcript -> intent, confidence and slots.

One featurize (the 20-150 buckets a sentence touches), one int8 TFLite invoke that gathers
just those rows of the first layer, one slot scan; no TensorFlow. A transcript is rejected
(``intent`` is None) when the model puts it in the out-of-scope class, when its
confidence is under the model's calibrated threshold, or when a slot the intent needs is
missing. A slot the sentence does not name can be filled from the site's settings (this
Pi's room), as Home Assistant fills a satellite's area.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from agent.featurize import Featurizer, normalize, tokenize
from agent.metadata import (
    NONE_LABEL,
    ModelError,
    ModelInfo,
    check_tflite,
    load_model_info,
    read_tflite,
)
from agent.recognizer import RecognizerError, load_grammar
from agent.slots import Slot, SlotMatcher, SlotValue
from agent.tflite import SparseRunner, available_runtime, open_interpreter


@dataclass(frozen=True)
class Classification:
    """The classifier's verdict on one transcript."""

    text: str
    """The normalized transcript the verdict is about."""
    intent: str | None
    """The accepted intent, or None when the transcript is rejected."""
    confidence: float
    """Probability of the best label (which may be the out-of-scope one)."""
    label: str
    """The best label, even when rejected."""
    slots: tuple[Slot, ...]
    reason: str = ""
    """Why it was rejected: ``out_of_scope``, ``low_confidence`` or ``missing_slot:<name>``."""


_NO_FILL: Mapping[str, str] = MappingProxyType({})


class IntentClassifier:
    """Loads a model directory once and classifies sentences against it."""

    def __init__(
        self,
        info: ModelInfo,
        runtime: str = "auto",
        threads: int = 1,
        fill: Mapping[str, str] = _NO_FILL,
    ) -> None:
        """``fill`` maps a slot name to the value a sentence that does not name one gets
        (``{"room": "kitchen"}``); each must be a value or synonym of the model's slot."""
        self.info = info
        self.featurizer = Featurizer(info.featurizer)
        self.slots = SlotMatcher(info.slots)
        self.fill = resolve_fill(info, fill)
        """Slot name -> (canonical value, the phrase configured)."""
        self.sentences = _grammar_sentences(info)
        """The model's grammar sentences as word tuples (empty for a word-list grammar)."""
        # Checked again on the very bytes loaded: the file may have changed since model.json
        # was read (a copy in progress), and a truncated flatbuffer crashes the runtime.
        content = read_tflite(info.tflite_path)
        check_tflite(info.tflite_path, content, info.tflite_sha256)
        self.runtime = available_runtime(runtime)

        def new_interpreter() -> Any:
            try:
                return open_interpreter(info.tflite_path, self.runtime, threads, content)[0]
            except (ValueError, RuntimeError) as err:
                raise ModelError(f"{info.tflite_path}: cannot load: {err}") from None

        try:
            self.runner = SparseRunner(new_interpreter)
        except (ValueError, RuntimeError) as err:
            raise ModelError(f"{info.tflite_path}: {err}") from None
        shapes = (self.runner.padding, self.runner.classes)
        if shapes != (info.featurizer.padding, len(info.labels)):
            raise ModelError(
                f"{info.tflite_path}: tensor shapes do not match model.json"
                " (was the directory assembled from different builds?)"
            )
        self._none = info.labels.index(NONE_LABEL) if NONE_LABEL in info.labels else -1

    @classmethod
    def load(
        cls,
        directory: str | Path,
        runtime: str = "auto",
        threads: int = 1,
        fill: Mapping[str, str] = _NO_FILL,
    ) -> IntentClassifier:
        return cls(load_model_info(directory), runtime, threads, fill)

    def probabilities(self, text: str) -> np.ndarray:
        """Probability of every label (in ``info.labels`` order) for ``text``."""
        return self.runner.probabilities(self.featurizer.occurrences(tokenize(text)))

    def classify(self, text: str) -> Classification:
        """Intent, confidence and slots of ``text``, or a rejection with its reason."""
        normalized = normalize(text)
        raw = self.runner.raw(self.featurizer.occurrences(normalized.split()))
        best = int(np.argmax(raw))  # dequantizing is monotonic: argmax the raw output
        confidence = self.runner.probability(float(raw[best]))
        label = self.info.labels[best]
        if best == self._none:
            return Classification(normalized, None, confidence, label, (), "out_of_scope")
        intent = self.info.intents[label]
        slots = self.slots.match(normalized, intent.slots)
        missing = [n for n in intent.slots if n in self.fill and all(s.name != n for s in slots)]
        if missing:
            # A filled slot says the configured phrase but spans nothing of the sentence.
            filled = (Slot(n, self.fill[n][0], self.fill[n][1], 0, 0) for n in missing)
            slots = (*slots, *filled)
        if confidence < self.info.threshold:
            return Classification(normalized, None, confidence, label, slots, "low_confidence")
        present = {slot.name for slot in slots}
        for name in intent.required:
            if name not in present:
                return Classification(
                    normalized, None, confidence, label, slots, f"missing_slot:{name}"
                )
        return Classification(normalized, label, confidence, label, slots)


def resolve_fill(info: ModelInfo, fill: Mapping[str, str]) -> dict[str, tuple[str | int, str]]:
    """Each slot of ``fill`` with the canonical value its phrase says and the phrase; raise
    :class:`ModelError` (one line) for a slot the model lacks or a phrase that is none of
    its values or synonyms ("lounge" resolves to ``living_room``)."""
    return {name: _fill_value(info, name, phrase) for name, phrase in fill.items()}


def _fill_value(info: ModelInfo, name: str, phrase: str) -> tuple[str | int, str]:
    """The canonical value of slot ``name`` that ``phrase`` says (a value or a synonym)."""
    values: tuple[SlotValue, ...] | None = info.slots.get(name)
    if values is None:
        known = ", ".join(info.slots) or "none"
        raise ModelError(
            f"{info.directory}: model.room_slot: the model has no slot '{name}' (slots: {known})"
        )
    wanted = normalize(phrase)
    for value in values:
        if wanted == normalize(str(value.value)) or wanted in map(normalize, value.synonyms):
            return value.value, phrase
    listed = ", ".join(str(v.value) for v in values[:12]) + (", ..." if len(values) > 12 else "")
    raise ModelError(
        f"{info.directory}: model.room: '{phrase}' is not a value of the slot '{name}' ({listed})"
    )


def _grammar_sentences(info: ModelInfo) -> frozenset[tuple[str, ...]]:
    """The sentences of the model's ``grammar.json`` as normalized words; empty when it is
    a list of words (a large spec), missing or unreadable (the recognizer, which reads the
    same file with the same bounds, is the one that says what is wrong with it)."""
    try:
        entries = load_grammar(info.directory)
    except RecognizerError:
        return frozenset()
    sentences = {tuple(normalize(e).split()) for e in entries}
    sentences.discard(())
    return frozenset(sentences) if any(len(s) > 1 for s in sentences) else frozenset()
