"""A small filesystem to fill up: the outbox on a full disk, in tests and bench/hostile.py."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path


class NoSmallDisk(RuntimeError):
    """A tmpfs cannot be mounted here (it needs root); ``str()`` says why."""


@contextlib.contextmanager
def small_filesystem(mount: Path, size: str = "512k") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``mount`` (created), unmounted on the way out."""
    mount.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        raise NoSmallDisk(f"cannot mount a small tmpfs here: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def fill(directory: Path) -> Path:
    """Fill the filesystem of ``directory`` to the last byte; the file that did it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for block in (65536, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * block)
    finally:
        os.close(fd)
    return filler
