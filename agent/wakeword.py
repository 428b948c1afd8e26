"""The wake word: microWakeWord models (pymicro-wakeword) on a 16 kHz stream.

A model is named by one of the bundled ids (``okay_nabu``, ``hey_jarvis``, ``hey_mycroft``,
``alexa``) or by the path of a microWakeWord JSON manifest (as Home Assistant and ESPHome
use them: ``model`` names the .tflite beside it, ``micro.probability_cutoff`` and
``micro.sliding_window_size`` say when it fires). Each model runs every 30 ms on the same
10 ms features; a detection is followed by ``refractory`` seconds in which no other is
taken, because the probability stays above the cutoff for half a second after the word.

TensorFlow Lite's C library crashes the process on a file that is not a model instead of
returning an error, so a model is opened once here first, with the library's complaints
captured, and refused in one line before pymicro-wakeword sees it. pymicro-wakeword loads
that library with RTLD_GLOBAL, which lets its symbols replace tflite-runtime's own in the
same process: the intent model's interpreter then crashed ("stack smashing detected") on
its next allocation. The library is loaded RTLD_LOCAL instead (:func:`_pymicro`).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any, Final

from agent.audio import AudioChunk
from agent.errors import UsageError
from agent.resample import RATE, Resampler

__all__ = [
    "BUNDLED",
    "Detection",
    "WakeWordDetector",
    "WakeWordError",
    "WakeWordModel",
    "load_model",
]

BUNDLED: Final = ("okay_nabu", "hey_jarvis", "hey_mycroft", "alexa")
"""The models that ship inside pymicro-wakeword."""
FRAME_SAMPLES: Final = RATE // 100
"""10 ms at 16 kHz: the feature step."""
FEATURES: Final = 40
"""Mel bands per feature frame (pymicro-features): a model's input must take these."""
_TFLITE_INT8: Final = (3, 9)  # kTfLiteUInt8, kTfLiteInt8


class WakeWordError(UsageError):
    """A wake word model that cannot be used; ``str()`` is one line naming it and the cause."""


@dataclass(frozen=True)
class Detection:
    """The wake word was heard."""

    wakeword_id: str
    probability: float
    """The model's averaged probability when it fired."""
    position: float
    """Seconds into the stream where it fired (the end of the 10 ms frame that did)."""


@dataclass(frozen=True)
class WakeWordModel:
    """One microWakeWord model as its manifest describes it."""

    id: str
    """The wake word id of Hermes topics: the .tflite file's stem (``okay_nabu``)."""
    wake_word: str
    """What to say, e.g. "Okay Nabu"."""
    manifest: Path
    tflite: Path
    cutoff: float
    """Probability (0 to 1) above which it fires, from the manifest."""
    window: int
    """How many probabilities (one per 30 ms) are averaged."""
    version: str = ""


def _pymicro() -> ModuleType:
    """pymicro-wakeword, with its TensorFlow Lite library loaded RTLD_LOCAL (see above)."""
    try:
        import pymicro_wakeword
        import pymicro_wakeword.wakeword as loader
    except (ImportError, OSError) as err:
        raise WakeWordError(
            f"pymicro-wakeword is unavailable: {err} (pip install pymicro-wakeword)"
        ) from None
    # The loader reads os.RTLD_GLOBAL and nothing else from os.
    loader.os = SimpleNamespace(RTLD_GLOBAL=os.RTLD_LOCAL)  # type: ignore[assignment]
    return pymicro_wakeword


def _models_dir() -> Path:
    return Path(_pymicro().__file__ or "").parent / "models"


def _library() -> Path:
    folder = _models_dir().parent / "lib"
    found = next(iter(sorted(folder.glob("*tensorflowlite_c.*"))), None)
    if found is None:
        raise WakeWordError(f"{folder}: pymicro-wakeword's TensorFlow Lite library is missing")
    return found


def _manifest_path(model: str, base_dir: Path | None) -> Path:
    if model in BUNDLED:
        return _models_dir() / f"{model}.json"
    if "/" not in model and not model.endswith(".json"):
        raise WakeWordError(
            f"{model}: not a bundled wake word ({', '.join(BUNDLED)}) nor a path to a"
            " microWakeWord .json manifest"
        )
    path = Path(model).expanduser()
    return base_dir / path if base_dir is not None and not path.is_absolute() else path


def load_model(model: str, base_dir: Path | None = None) -> WakeWordModel:
    """Read the manifest of ``model`` (a bundled id or a path, relative to ``base_dir``) and
    check that its .tflite is a wake word model; raise :class:`WakeWordError` if not."""
    path = _manifest_path(model, base_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WakeWordError(f"{path}: wake word manifest does not exist") from None
    except OSError as err:
        raise WakeWordError(f"{path}: cannot read: {err.strerror or err}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise WakeWordError(f"{path}: not a wake word manifest (invalid JSON: {err})") from None
    micro = data.get("micro") if isinstance(data, dict) else None
    if not isinstance(micro, dict) or not isinstance(data.get("model"), str):
        raise WakeWordError(
            f'{path}: not a microWakeWord manifest (needs "model" and a "micro" object)'
        )
    if data.get("type", "micro") != "micro":
        raise WakeWordError(f'{path}: a {data.get("type")!r} model; only "micro" is supported')
    cutoff = micro.get("probability_cutoff")
    window = micro.get("sliding_window_size")
    if not isinstance(cutoff, int | float) or isinstance(cutoff, bool) or not 0 < cutoff <= 1:
        raise WakeWordError(f"{path}: micro.probability_cutoff must be a number from 0 to 1")
    if not isinstance(window, int) or isinstance(window, bool) or not 1 <= window <= 1000:
        raise WakeWordError(f"{path}: micro.sliding_window_size must be an integer from 1")
    tflite = path.parent / data["model"]
    if any(c in tflite.stem for c in "+#\x00") or not tflite.stem:
        raise WakeWordError(
            f"{path}: model file name {tflite.name!r} cannot be a Hermes topic level"
        )
    spec = WakeWordModel(
        id=tflite.stem,
        wake_word=str(data.get("wake_word") or tflite.stem),
        manifest=path,
        tflite=tflite,
        cutoff=float(cutoff),
        window=window,
        version=str(data.get("version", "")),
    )
    _check_tflite(spec)
    return spec


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """What C code writes to file descriptor 2 meanwhile, as one string in the list."""
    sys.stderr.flush()
    saved = os.dup(2)
    text: list[str] = []
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text.append(capture.read(4000).decode("utf-8", errors="replace"))


def _tflite_complaint(text: str) -> str:
    lines = [line.removeprefix("ERROR: ").strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith("INFO:")]
    return f" (TensorFlow Lite: {lines[0]})" if lines else ""


def _check_tflite(spec: WakeWordModel) -> None:
    """Open ``spec.tflite`` with the library pymicro-wakeword uses and check its tensors."""
    path = spec.tflite
    if not path.is_file():
        raise WakeWordError(f"{spec.manifest}: its model {path} does not exist")
    try:
        path.open("rb").close()
    except OSError as err:
        raise WakeWordError(f"{path}: cannot read: {err.strerror or err}") from None
    lib: Any = _pymicro().wakeword.TfLiteWakeWord(_library()).lib
    with _captured_stderr() as said:
        model = lib.TfLiteModelCreateFromFile(str(path.resolve()).encode("utf-8"))
    if not model:
        raise WakeWordError(f"{path}: not a TensorFlow Lite model{_tflite_complaint(said[0])}")
    interpreter = None
    try:
        with _captured_stderr() as said:
            interpreter = lib.TfLiteInterpreterCreate(model, None)
            ok = interpreter and lib.TfLiteInterpreterAllocateTensors(interpreter) == 0
        if not ok:
            raise WakeWordError(f"{path}: cannot run this model{_tflite_complaint(said[0])}")
        tensor = lib.TfLiteInterpreterGetInputTensor(interpreter, 0)
        output = lib.TfLiteInterpreterGetOutputTensor(interpreter, 0)
        dims = [lib.TfLiteTensorDim(tensor, i) for i in range(lib.TfLiteTensorNumDims(tensor))]
        types = (lib.TfLiteTensorType(tensor), lib.TfLiteTensorType(output))
        if len(dims) != 3 or dims[2] != FEATURES or any(t not in _TFLITE_INT8 for t in types):
            raise WakeWordError(
                f"{path}: not a microWakeWord model (input {dims}, expected a quantized"
                f" [1, stride, {FEATURES}] of audio features)"
            )
    finally:
        if interpreter:
            lib.TfLiteInterpreterDelete(interpreter)
        lib.TfLiteModelDelete(model)


class WakeWordDetector:
    """Runs one or more wake word models on a stream of audio chunks of any rate.

    Not thread-safe: one per audio stream.
    """

    def __init__(
        self,
        models: tuple[str, ...],
        cutoff: float | None = None,
        refractory: float = 2.0,
        base_dir: Path | None = None,
    ) -> None:
        """Load ``models`` (bundled ids or manifest paths relative to ``base_dir``);
        ``cutoff`` replaces every model's own probability cutoff."""
        if not models:
            raise WakeWordError("no wake word model given")
        pymicro = _pymicro()
        self.models = tuple(load_model(model, base_dir) for model in dict.fromkeys(models))
        self.refractory = refractory
        library = _library()
        self._engines = []
        for spec in self.models:
            try:
                engine = pymicro.MicroWakeWord(
                    spec.id,
                    wake_word=spec.wake_word,
                    tflite_model=spec.tflite,
                    probability_cutoff=cutoff if cutoff else spec.cutoff,
                    sliding_window_size=spec.window,
                    trained_languages=[],
                    libtensorflowlite_c_path=library,
                )
            except (ValueError, RuntimeError, OSError) as err:
                raise WakeWordError(f"{spec.tflite}: cannot load: {err}") from None
            self._engines.append(engine)
        self._features = pymicro.MicroWakeWordFeatures()
        self._resampler = Resampler()
        self._pending = b""
        self._samples = 0
        self._quiet_until = -math.inf

    def cutoff(self, wakeword_id: str) -> float:
        """The probability cutoff in use for ``wakeword_id``."""
        for engine in self._engines:
            if engine.id == wakeword_id:
                return float(engine.probability_cutoff)
        raise KeyError(wakeword_id)

    @property
    def position(self) -> float:
        """Seconds of 16 kHz audio run through the models so far."""
        return self._samples / RATE

    def process(self, chunk: AudioChunk) -> Detection | None:
        """Run ``chunk`` (mono PCM at any rate) through the models; the first detection in it
        outside the refractory time, or None."""
        pcm = self._pending + self._resampler.process(chunk)
        usable = len(pcm) - len(pcm) % (2 * FRAME_SAMPLES)
        self._pending = pcm[usable:]
        found: Detection | None = None
        for start in range(0, usable, 2 * FRAME_SAMPLES):
            frame = pcm[start : start + 2 * FRAME_SAMPLES]
            self._samples += FRAME_SAMPLES
            for features in self._features.process_streaming(frame):
                for engine in self._engines:
                    probability = engine.process_streaming_prob(features)
                    if probability is None or probability <= engine.probability_cutoff:
                        continue
                    position = self._samples / RATE
                    if found is None and position >= self._quiet_until:
                        found = Detection(engine.id, float(probability), position)
                        self._quiet_until = position + self.refractory
        return found

    def reset(self) -> None:
        """Forget the stream so far (the models' state, buffered audio, the refractory time)."""
        for engine in self._engines:
            engine.reset()
        self._features.reset()
        self._resampler = Resampler()
        self._pending = b""
        self._quiet_until = -math.inf
