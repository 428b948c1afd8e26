"""Record ``intent.tflite``'s SHA-256 in ``model.json``: ``python -m convert.stamp DIR...``.

The agent refuses a model directory whose ``model.json`` lacks the checksum, because a
truncated .tflite crashes the TFLite runtime instead of raising. ``voice-agent convert``
writes it; this stamps a directory built before that, or one whose .tflite was replaced
on purpose, without TensorFlow and without retraining. The rest of ``model.json`` is kept
as it is and written exactly as ``convert`` writes it, so stamping a stamped directory
changes no byte.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from agent.metadata import METADATA_FILE, TFLITE_FILE

__all__ = ["metadata_text", "stamp"]


def metadata_text(metadata: dict[str, Any]) -> str:
    """``model.json``'s text, as every writer writes it."""
    return json.dumps(metadata, indent=2, ensure_ascii=False) + "\n"


def stamp(directory: str | Path) -> str:
    """Set ``tflite_sha256`` in ``directory/model.json`` to the hash of the .tflite beside
    it (replacing the file in one rename); return the hash."""
    folder = Path(directory)
    path = folder / METADATA_FILE
    metadata = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: expected a JSON object")
    digest = hashlib.sha256((folder / TFLITE_FILE).read_bytes()).hexdigest()
    metadata["tflite_sha256"] = digest
    handle, temporary = tempfile.mkstemp(prefix=f".{METADATA_FILE}.", dir=folder)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(metadata_text(metadata))
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return digest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m convert.stamp", description=__doc__.splitlines()[0]
    )
    parser.add_argument("directories", nargs="+", type=Path, metavar="DIR")
    args = parser.parse_args(argv)
    for directory in args.directories:
        try:
            digest = stamp(directory)
        except (OSError, ValueError) as err:  # JSONDecodeError is a ValueError
            print(f"{directory}: {err}", file=sys.stderr)
            return 2
        print(f"{directory / METADATA_FILE}: tflite_sha256 {digest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
