"""``voice-agent`` as a user runs it: a child process of this Python, from the repository."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def voice_agent(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run ``python -m agent ARGS`` and capture its exit status, stdout and stderr as text."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
