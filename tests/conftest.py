"""Hooks shared by both suites (tests/agent and tests/convert run in separate processes)."""

from __future__ import annotations

import signal
from types import FrameType

import pytest


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    # A CI runner or a timeout stops a run with SIGTERM, which would end this process
    # before any fixture's teardown: the brokers, daemons and sound servers the tests
    # started would outlive it, holding their ports. As a KeyboardInterrupt, pytest still
    # tears every fixture down.
    signal.signal(signal.SIGTERM, _interrupt)
