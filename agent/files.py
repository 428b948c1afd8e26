"""Read a whole input file safely: a regular file only, never more than a cap.

Opening a FIFO for reading blocks until someone writes to it (a start that hangs), a
device such as ``/dev/zero`` never ends, and a file of a few hundred megabytes read by
mistake costs the Pi its memory. So the file is opened without blocking, its type and
size are checked on the open descriptor (no window for a swap), and at most the cap plus
one byte is read, in case it grew.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = ["FileProblem", "read_regular"]

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class FileProblem(Exception):
    """A file that cannot be used; ``str()`` is the cause in a few words, without the path
    (each caller names the file its own way)."""


def _size(count: int) -> str:
    return f"{count / (1 << 20):.0f} MiB" if count >= 1 << 20 else f"{count} bytes"


def read_regular(path: str | Path, max_bytes: int) -> tuple[bytes, os.stat_result]:
    """The bytes of the regular file at ``path`` (at most ``max_bytes``) and its status."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError) as err:  # ValueError: a NUL in the path
        raise FileProblem(f"cannot read: {getattr(err, 'strerror', None) or err}") from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise FileProblem("cannot read: Is a directory")
        for test, kind in _KINDS:
            if test(info.st_mode):
                raise FileProblem(f"not a regular file ({kind})")
        if info.st_size > max_bytes:
            raise FileProblem(f"too large ({_size(info.st_size)}; at most {_size(max_bytes)})")
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:
            chunk = os.read(fd, min(1 << 20, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:  # it grew while being read
            raise FileProblem(f"too large (over {_size(max_bytes)})")
        return b"".join(chunks), info
    except OSError as err:
        raise FileProblem(f"cannot read: {err.strerror or err}") from None
    finally:
        os.close(fd)
