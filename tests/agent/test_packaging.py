"""The agent installs on a Raspberry Pi: every runtime dependency, and everything those pull
in, is on PyPI as a wheel for 64-bit Raspberry Pi OS (Bookworm: aarch64, glibc 2.36, CPython
3.11), so ``pip install 'voice-agent[runtime]'`` on a Pi never has to compile anything.

This asks the real registry (through pip and its cache). Without one the test fails and says
so; VOICE_AGENT_OFFLINE=1 skips it on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

ROOT = Path(__file__).resolve().parents[2]
PYTHON_VERSION = "3.11"
GLIBC_MINOR = 36
"""Bookworm's glibc is 2.36, so a Pi takes manylinux_2_17 up to manylinux_2_36 wheels."""
PLATFORMS = (
    "manylinux2014_aarch64",  # the legacy name of manylinux_2_17 (tflite-runtime, vosk)
    *(f"manylinux_2_{minor}_aarch64" for minor in range(17, GLIBC_MINOR + 1)),
)
PI_ENVIRONMENT = {
    **default_environment(),
    "implementation_name": "cpython",
    "platform_python_implementation": "CPython",
    "python_version": PYTHON_VERSION,
    "python_full_version": f"{PYTHON_VERSION}.2",
    "platform_machine": "aarch64",
    "platform_system": "Linux",
    "sys_platform": "linux",
    "os_name": "posix",
}
"""PEP 508 marker values on a Pi, so "python_version < '3.12'" picks tflite-runtime."""
PURE_PYTHON_SDISTS = ("srt",)
"""Dependencies that PyPI has only as source: vosk needs srt (subtitles, pure Python). A Pi
builds it without a compiler; the test builds it here and checks the wheel is py3-none-any."""


def pi_requirements() -> list[Requirement]:
    """The base dependencies plus the ``runtime`` extra, as they apply on a Pi."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    strings = [*project["dependencies"], *project["optional-dependencies"]["runtime"]]
    requirements = [Requirement(text) for text in strings]
    return [r for r in requirements if r.marker is None or r.marker.evaluate(PI_ENVIRONMENT)]


def test_pi_requirements_follow_the_markers() -> None:
    names = {canonicalize_name(r.name) for r in pi_requirements()}
    assert "tflite-runtime" in names  # Python 3.11: the Pi's interpreter
    assert "ai-edge-litert" not in names  # only for Python 3.12 and later
    assert {"numpy", "vosk", "paho-mqtt", "sounddevice"} <= names


@pytest.fixture(scope="module")
def pi_wheels(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    if os.environ.get("VOICE_AGENT_OFFLINE") == "1":
        pytest.skip("VOICE_AGENT_OFFLINE=1: not asking PyPI whether the Pi's wheels exist")
    dest = tmp_path_factory.mktemp("pi-wheels")
    built = tmp_path_factory.mktemp("built-wheels")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    build = [*pip, "wheel", "--no-deps", "--quiet", f"--wheel-dir={built}", *PURE_PYTHON_SDISTS]
    command = [
        *pip, "download",
        f"--find-links={built}",
        "--only-binary=:all:",
        *(f"--platform={platform}" for platform in PLATFORMS),
        f"--python-version={PYTHON_VERSION}",
        "--implementation=cp",
        f"--dest={dest}",
        "--progress-bar=off",
        "--quiet",
        *(str(r.__class__(f"{r.name}{r.specifier}")) for r in pi_requirements()),
    ]  # fmt: skip
    for step in (build, command):
        result = subprocess.run(step, capture_output=True, text=True, timeout=900, check=False)
        if result.returncode != 0:
            break
    if result.returncode != 0:
        pytest.fail(
            "pip could not get aarch64/CPython 3.11 wheels for the runtime dependencies: either "
            "one has no Pi wheel (pip says which below), or PyPI is out of reach (then set "
            "VOICE_AGENT_OFFLINE=1 to skip this test on purpose).\n"
            f"$ {' '.join(result.args)}\n{result.stderr[-3000:]}"
        )
    return sorted(dest.iterdir())


def test_every_runtime_dependency_has_a_pi_wheel(pi_wheels: list[Path]) -> None:
    not_wheels = [path.name for path in pi_wheels if path.suffix != ".whl"]
    assert not not_wheels, f"pip fetched sources a Pi would have to build: {not_wheels}"

    downloaded = {}
    for path in pi_wheels:
        name, _version, _build, tags = parse_wheel_filename(path.name)
        downloaded[name] = path.name
        platforms = {tag.platform for tag in tags}
        assert all(p == "any" or p.endswith("_aarch64") for p in platforms), path.name
        assert any(p == "any" or p in PLATFORMS for p in platforms), path.name
        interpreters = {tag.interpreter for tag in tags}
        assert interpreters & {"py3", "cp3", "cp311", "py311"} or any(
            tag.abi == "abi3" for tag in tags
        ), path.name

    wanted = {canonicalize_name(r.name) for r in pi_requirements()}
    missing = wanted - downloaded.keys()
    assert not missing, f"no wheel for {sorted(missing)} among {sorted(downloaded.values())}"


def test_the_pi_gets_the_native_wheels_the_agent_was_built_against(
    pi_wheels: list[Path],
) -> None:
    """The native pieces come as aarch64 builds, and numpy stays below 2 for tflite-runtime."""
    by_name = {parse_wheel_filename(path.name)[0]: path.name for path in pi_wheels}
    for name in ("numpy", "tflite-runtime", "vosk", "cffi"):
        assert "aarch64" in by_name[canonicalize_name(name)], by_name
    numpy_version = parse_wheel_filename(by_name[canonicalize_name("numpy")])[1]
    assert numpy_version.major == 1


def test_source_only_dependencies_are_pure_python(pi_wheels: list[Path]) -> None:
    """What the Pi must build from source builds into a wheel for any platform."""
    for name in PURE_PYTHON_SDISTS:
        wheel = next(p for p in pi_wheels if parse_wheel_filename(p.name)[0] == name)
        assert wheel.name.endswith("-py3-none-any.whl"), wheel.name
