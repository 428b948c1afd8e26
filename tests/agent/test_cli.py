"""``voice-agent classify`` as a user runs it: a real process, JSON out, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=120,
    )


def test_classify_prints_json(en_model: Path) -> None:
    out = run("classify", str(en_model), "turn on the kitchen light", "tell me a joke")
    assert out.returncode == 0, out.stderr
    first, second = (json.loads(line) for line in out.stdout.splitlines())
    assert first["input"] == "turn on the kitchen light"
    assert first["intent"] == "LightOn"
    assert first["slots"] == [
        {"slot": "room", "value": "kitchen", "raw": "kitchen", "start": 12, "end": 19}
    ]
    assert 0.5 < first["confidence"] <= 1
    assert second["intent"] is None
    assert second["rejected"] == "out_of_scope"


def test_classify_reads_stdin(en_model: Path) -> None:
    out = run(
        "classify", str(en_model), "-", stdin="open the bedroom blinds\n\nlounge lights off\n"
    )
    assert out.returncode == 0, out.stderr
    intents = [json.loads(line)["intent"] for line in out.stdout.splitlines()]
    assert intents == ["CoverOpen", "LightOff"]


def test_classify_bad_model_is_one_line(tmp_path: Path) -> None:
    out = run("classify", str(tmp_path / "missing"), "hello")
    assert out.returncode == 2
    assert out.stderr == f"voice-agent: error: {tmp_path / 'missing'}: model directory not found\n"
    assert out.stdout == ""


def test_help_lists_the_commands() -> None:
    out = run("--help")
    assert out.returncode == 0
    assert "classify" in out.stdout and "convert" in out.stdout
