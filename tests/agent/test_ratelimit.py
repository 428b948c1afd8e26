"""Warnings about outside input: a burst per interval, then one line about the rest."""

from __future__ import annotations

import logging

import pytest

from agent.ratelimit import WarningLimiter


class Clock:
    """Seconds that pass only when the test says so."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_burst_then_one_line_then_the_count_when_the_interval_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    limiter = WarningLimiter(logging.getLogger("test.ratelimit"), 3, 60.0, clock)
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        for i in range(1000):
            limiter.warning("bad %d", i)
        clock.now = 59.0
        limiter.warning("still in the interval")
        clock.now = 60.0
        limiter.warning("a new interval")
    assert caplog.messages == [
        "bad 0",
        "bad 1",
        "bad 2",
        "more than 3 warnings in 60 s: counting the rest, not logging them",
        "998 more warnings like the ones above were left out",
        "a new interval",
    ]
    assert limiter.suppressed == 0


def test_a_quiet_interval_logs_everything(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    limiter = WarningLimiter(logging.getLogger("test.ratelimit"), 2, 10.0, clock)
    with caplog.at_level(logging.WARNING, logger="test.ratelimit"):
        for i in range(6):
            limiter.warning("bad %d", i)
            clock.now += 5.0
    assert caplog.messages == [f"bad {i}" for i in range(6)]
