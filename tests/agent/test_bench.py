"""``voice-agent bench`` on this machine: the real Korean models, espeak-ng, mosquitto and the
wake word model. Only that the table has its rows is checked, never the times."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path

from agent.bench import Row, machine_model, throttling
from agent.recognizer import packaged_model_dir
from tests.agent.command import voice_agent
from tests.agent.speech import require_tools

ROWS = (
    "machine",
    "system",
    "voice-agent",
    "CPU temperature before",
    "wake word CPU",
    "Vosk model load",
    "Vosk real-time factor, grammar",
    "Vosk real-time factor, open",
    "classify p50 / p99",
    "end of speech → acknowledged p50 / max",
    "peak RSS",
    "CPU temperature after",
    "throttling",
)


def bench(ko_model: Path, *args: str, path: str | None = None) -> subprocess.CompletedProcess[str]:
    vosk = str(packaged_model_dir())
    command = ("bench", "--quick", "--model", str(ko_model), "--vosk-model", vosk, *args)
    return voice_agent(*command, timeout=300, env={"PATH": path} if path else None)


def rows(markdown: str) -> dict[str, tuple[str, str]]:
    """The table's rows by name: (value, notes)."""
    lines = markdown.splitlines()
    assert lines[:2] == ["| measure | value | notes |", "|---|---|---|"], lines[:2]
    found = {}
    for line in lines[2:]:
        assert line.startswith("| ") and line.endswith(" |"), line
        name, value, notes = (cell.strip() for cell in line[2:-2].split(" | "))
        found[name] = (value, notes)
    return found


def test_bench_prints_one_table_with_every_measure(ko_model: Path) -> None:
    require_tools()
    out = bench(ko_model)
    assert out.returncode == 0, out.stderr
    table = rows(out.stdout)  # stdout is the table and nothing else
    assert tuple(table) == ROWS
    assert table["machine"][0] == machine_model()
    assert '"okay nabu" heard: yes' in table["wake word CPU"][1]
    assert "2 of 2 utterances were commands" in table["end of speech → acknowledged p50 / max"][1]
    assert "부엌 조명 좀 켜줘" in table["Vosk real-time factor, grammar"][1]
    assert table["peak RSS"][0].endswith(" MB")


def test_bench_without_espeak_says_so_and_still_prints_the_table(
    ko_model: Path, tmp_path: Path
) -> None:
    # A PATH with everything but espeak-ng (mosquitto stays found).
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        for program in Path(folder).glob("*") if Path(folder).is_dir() else ():
            target = bin_dir / program.name
            if program.name != "espeak-ng" and not target.exists():
                target.symlink_to(program)
    assert shutil.which("espeak-ng", path=str(bin_dir)) is None
    out = bench(ko_model, path=str(bin_dir))
    assert out.returncode == 0, out.stderr
    assert "espeak-ng is not installed (apt-get install espeak-ng)" in out.stderr
    table = rows(out.stdout)
    assert table["Vosk real-time factor"] == ("skipped", "no speech (espeak-ng not installed)")
    assert table["end of speech → acknowledged"][0] == "skipped"
    assert "no speech" in table["wake word CPU"][1]


def test_bench_with_a_missing_model_is_one_line(tmp_path: Path) -> None:
    out = voice_agent("bench", "--quick", "--model", str(tmp_path / "none"))
    assert out.returncode == 2
    assert out.stdout == ""
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert str(tmp_path / "none") in out.stderr


def test_machine_model_reads_the_device_tree_then_cpuinfo(tmp_path: Path) -> None:
    tree = tmp_path / "model"
    tree.write_bytes(b"Raspberry Pi 5 Model B Rev 1.0\0")
    assert machine_model(tree, tmp_path / "none") == "Raspberry Pi 5 Model B Rev 1.0"
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Example CPU @ 2.0GHz\n")
    expected = f"{platform.machine()} (Example CPU @ 2.0GHz)"
    assert machine_model(tmp_path / "none", cpuinfo) == expected


def test_throttling_names_the_firmware_bits() -> None:
    assert throttling("throttled=0x0") == Row("throttling", "0x0", "none (vcgencmd get_throttled)")
    row = throttling("throttled=0x50005")
    assert row.value == "0x50005"
    assert row.note == (
        "under-voltage now, throttled now, under-voltage since boot, throttled since boot"
    )
    assert throttling(None).value == "n/a"
