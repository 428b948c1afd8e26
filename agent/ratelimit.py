"""Warnings about input from outside, at most a burst per interval.

Anyone who may publish a text command can send thousands a second; each bad one is worth
a warning, but thousands of lines bury everything else in the journal (and cost the SD
card). The first ``burst`` warnings of an interval are logged as they come, one line
then says the rest are being counted, and the first warning of a later interval is
preceded by how many were left out.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["WarningLimiter"]


class WarningLimiter:
    """Passes at most ``burst`` warnings per ``interval`` seconds to ``logger``."""

    def __init__(
        self,
        logger: logging.Logger,
        burst: int = 20,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.burst = burst
        self.interval = interval
        self.clock = clock
        self._lock = threading.Lock()  # paho's thread and the query worker both warn
        self._start = clock()
        self._count = 0
        self.suppressed = 0
        """Warnings left out in the current interval."""

    def warning(self, message: str, *args: object) -> None:
        """``logger.warning(message, *args)``, unless this interval's burst is spent."""
        # Logged under the lock too: the two threads' lines then come out in the order they
        # were counted (the announcement after the last line of the burst, never before it).
        with self._lock:
            now = self.clock()
            if now - self._start >= self.interval:
                if self.suppressed:
                    self.logger.warning(
                        "%d more warnings like the ones above were left out", self.suppressed
                    )
                self.suppressed = 0
                self._start, self._count = now, 0
            self._count += 1
            if self._count <= self.burst:
                self.logger.warning(message, *args)
                return
            self.suppressed += 1
            if self._count == self.burst + 1:
                self.logger.warning(
                    "more than %d warnings in %g s: counting the rest, not logging them",
                    self.burst,
                    self.interval,
                )
