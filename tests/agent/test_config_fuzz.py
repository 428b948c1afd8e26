"""Hostile configuration files: only a Config or a one-line ConfigError naming the file.

The inputs (tests/fuzzing.py) are DEFAULT_TOML (every key, the commented-out ones set too)
with a few hostile edits: values of the wrong type, out of range, NaN and infinities,
huge integers, odd Unicode, unknown and duplicated keys, paths to folders, devices and
missing files; plus random text and bytes. A few refused files also go through the real
command line, which must exit with status 2 and one line on stderr. bench/fuzz.py runs
the same strategy with thousands of examples.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given

from agent.config import ConfigError, load_config
from tests.agent.command import voice_agent
from tests.fuzzing import EN_MODEL, check_config, config_inputs, fuzz_settings, run_strategy


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    memory = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=memory if memory.is_dir() else None) as folder:
        yield Path(folder)


@fuzz_settings(400)
@given(case=config_inputs())
def test_fuzzed_configs(scratch: Path, case: tuple[bytes, int]) -> None:
    check_config(scratch / "config.toml", *case)


def load_in_thread(path: Path) -> str:
    """The one-line error of loading ``path``; fails (rather than hanging the suite) if
    loading takes more than 30 s, as opening a FIFO without a writer would."""
    outcome: list[BaseException | object] = []

    def run() -> None:
        try:
            outcome.append(load_config(path, environ={}))
        except BaseException as err:
            outcome.append(err)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)
    assert not worker.is_alive(), f"loading {path} hangs"
    (result,) = outcome
    assert isinstance(result, ConfigError), result
    message = str(result)
    assert len(message.splitlines()) == 1 and message.startswith(str(path))
    return message


@pytest.mark.parametrize(
    ("key", "target", "problem"),
    [
        # /dev/zero never ends: the secret was read into memory until it ran out.
        ("password_file", "/dev/zero", "not a regular file"),
        # Opening a FIFO blocks until someone writes: the start hung forever.
        ("password_file", "{fifo}", "not a regular file"),
        ("ca_file", "{fifo}", "not a regular file"),
        ("ca_file", "/dev/urandom", "not a regular file"),
        ("ca_file", "{dir}", "cannot read: Is a directory"),
        ("password_file", "{big}", "too large for a password (over 1 MiB)"),
    ],
)
def test_secret_and_certificate_paths_that_never_end(
    tmp_path: Path, key: str, target: str, problem: str
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big"
    big.write_bytes(b"x" * (2 << 20))
    target = target.format(fifo=fifo, dir=tmp_path, big=big)
    path = tmp_path / "config.toml"
    path.write_text(
        f'[model]\npath = "{EN_MODEL}"\n[mqtt]\nusername = "u"\ntls = true\n{key} = "{target}"\n'
    )
    path.chmod(0o600)
    assert load_in_thread(path) == f"{path}: mqtt.{key}: {target}: {problem}"


def test_a_config_that_never_ends_is_refused(tmp_path: Path) -> None:
    huge = tmp_path / "huge.toml"
    huge.write_text("# " + "x" * (2 << 20) + "\n")
    assert load_in_thread(huge) == f"{huge}: too large for a configuration file (over 1 MiB)"
    with pytest.raises(ConfigError) as info:
        load_config(Path("/dev/zero"), environ={})
    assert str(info.value) == "/dev/zero: not a regular file (a character device)"


def test_a_fifo_as_the_config_is_refused_at_once(tmp_path: Path) -> None:
    # Opening a FIFO to read it waits for a writer: the start would hang, silently.
    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    assert load_in_thread(fifo) == f"{fifo}: not a regular file (a FIFO)"


def test_bad_configs_through_the_command_line(tmp_path: Path) -> None:
    """Refused files from the strategy, run as `python -m agent run --config FILE`: status 2,
    one line on stderr naming the file, no traceback."""
    refused: list[tuple[bytes, int]] = []

    def keep_refused(case: tuple[bytes, int]) -> str:
        outcome = check_config(tmp_path / "probe.toml", *case)
        if outcome == "refused" and len(refused) < 6:
            refused.append(case)
        return outcome

    tally = run_strategy(config_inputs(), 40, seed=4, check=keep_refused)
    assert tally.crashes == 0 and len(refused) == 6
    for number, (data, mode) in enumerate(refused):
        path = tmp_path / f"bad-{number}.toml"
        path.write_bytes(data)
        path.chmod(mode)
        done = voice_agent("run", "--config", str(path))
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"voice-agent: error: {path}"), lines
