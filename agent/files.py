"""Read a whole input file safely: a regular file only, never more than a cap; and JSON
documents from such files, with their nesting bounded.

Opening a FIFO for reading blocks until someone writes to it (a start that hangs), a
device such as ``/dev/zero`` never ends, and a file of a few hundred megabytes read by
mistake costs the Pi its memory. So the file is opened without blocking, its type and
size are checked on the open descriptor (no window for a swap), and at most the cap plus
one byte is read, in case it grew.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Final

__all__ = ["MAX_JSON_DEPTH", "FileProblem", "read_json", "read_regular"]

MAX_JSON_DEPTH: Final = 100
"""Deepest nesting accepted in a JSON file: a model.json is 5 levels plus an action
payload's (at most 64, as the spec allows); 100,000 levels would exhaust the stack."""
_SURROGATE: Final = re.compile(r"[\ud800-\udfff]")

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class FileProblem(Exception):
    """A file that cannot be used; ``str()`` is the cause in a few words, without the path
    (each caller names the file its own way); ``line`` is where, when known."""

    def __init__(self, cause: str, line: int | None = None) -> None:
        super().__init__(cause)
        self.line = line

    def at(self, path: str | Path) -> str:
        """The one-line message naming ``path`` (and the line): ``path:line: cause``."""
        where = f"{path}:{self.line}" if self.line is not None else str(path)
        return f"{where}: {self}"


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


def read_json(path: str | Path, max_bytes: int) -> object:
    """The JSON document in the regular file at ``path`` (at most ``max_bytes``), nested at
    most :data:`MAX_JSON_DEPTH` deep and holding no lone surrogate (``"\\ud800"`` parses, but
    cannot be written out again as UTF-8: a log line or a publish would fail on it)."""
    data, _ = read_regular(path, max_bytes)
    try:
        document = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise FileProblem("not UTF-8 text", line) from None
    except json.JSONDecodeError as err:
        raise FileProblem(f"invalid JSON: {err.msg}", err.lineno) from None
    except RecursionError:
        raise FileProblem(f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels") from None
    _check_tree(document)
    return document


def _check_tree(document: object) -> None:
    """Walk ``document`` without recursion: depth and lone surrogates."""
    stack: list[tuple[object, int]] = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            items: list[object] = [*node.keys(), *node.values()]
        elif isinstance(node, list):
            items = node
        else:
            if isinstance(node, str) and _SURROGATE.search(node):
                code = ord(_SURROGATE.findall(node)[0])
                raise FileProblem(f"holds a lone surrogate (\\u{code:04x}), which is not UTF-8")
            continue
        if depth > MAX_JSON_DEPTH:
            raise FileProblem(f"invalid JSON: nested deeper than {MAX_JSON_DEPTH} levels")
        stack.extend((item, depth + 1) for item in items)
