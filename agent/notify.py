"""A dependency-free client for systemd's notify protocol (sd_notify(3)).

Under ``Type=notify`` systemd waits for ``READY=1`` before it calls the service started, shows
``STATUS=`` in ``systemctl status``, and with ``WatchdogSec=`` restarts the service when
``WATCHDOG=1`` pings stop. Each message is one datagram on the AF_UNIX socket named by
``$NOTIFY_SOCKET`` (a leading ``@`` means Linux's abstract namespace); the kernel attaches
our credentials, which ``NotifyAccess=main`` checks. Outside systemd every call is a no-op,
and a failed send never raises: losing a status line must not take the agent down.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Notifier"]

logger = logging.getLogger(__name__)

SEND_TIMEOUT = 1.0
"""Seconds a send may block on a full socket queue; a stuck manager must not stall the agent."""


@dataclass(eq=False)
class Notifier:
    """Sends state changes to the service manager; every method is a no-op without a socket.

    ``socket_path`` is ``$NOTIFY_SOCKET`` as systemd set it (a path, or ``@name`` for the
    abstract namespace); ``watchdog_usec`` is the manager's watchdog timeout for this process,
    or None when no keep-alive pings are expected. Build it with :meth:`from_environ`.
    """

    socket_path: str | None
    watchdog_usec: int | None = None
    _failing: bool = field(default=False, init=False, repr=False)
    """True after a failed send, until one succeeds: one debug line per outage, not per ping."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], pid: int) -> Notifier:
        """Read ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` as libsystemd does.

        The watchdog counts only when ``WATCHDOG_PID`` is unset or equals ``pid``, so a child
        that inherited the environment does not ping on its parent's behalf
        (sd_watchdog_enabled(3)). The CLI calls this once; nothing else reads the environment.
        """
        socket_path = environ.get("NOTIFY_SOCKET") or None
        if socket_path is not None and not socket_path.startswith(("/", "@")):
            # Only AF_UNIX is spoken here (not e.g. "vsock:"); a relative path is invalid.
            logger.debug("ignoring unsupported NOTIFY_SOCKET %r", socket_path)
            socket_path = None
        return cls(socket_path, _watchdog_usec(environ, pid))

    @property
    def enabled(self) -> bool:
        """Whether a service manager is listening (we run under systemd with notify access)."""
        return self.socket_path is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between :meth:`watchdog` pings: half the timeout, as sd_watchdog_enabled(3)
        advises, so one late ping does not get the service killed; None: no pings expected."""
        if self.socket_path is None or self.watchdog_usec is None:
            return None
        return self.watchdog_usec / 2_000_000

    def ready(self, status: str = "") -> bool:
        """Start-up (or a reload) is complete: systemd now calls the service active."""
        return self.send("READY=1", *_status(status))

    def status(self, text: str) -> bool:
        """A one-line state shown by ``systemctl status``, e.g. ``listening``."""
        return self.send(*_status(text))

    def watchdog(self) -> bool:
        """Keep-alive ping: the service is still making progress."""
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        """Shutdown has begun, so systemd does not read the exit as a crash in the making."""
        return self.send("STOPPING=1", *_status(status))

    def reloading(self, status: str = "") -> bool:
        """A configuration reload has begun; send :meth:`ready` when it is done.

        ``MONOTONIC_USEC`` lets systemd 253+ (``Type=notify-reload``) match this message to
        the reload it asked for; older managers ignore the field.
        """
        monotonic_usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={monotonic_usec}", *_status(status))

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` assignments as one datagram; True when it went out.

        Never raises: a send failure is logged at debug once until a send succeeds again.
        """
        if self.socket_path is None or not assignments:
            return False
        address = self.socket_path
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(SEND_TIMEOUT)
                sock.sendto("\n".join(assignments).encode(), address)
        except (OSError, ValueError) as error:
            # ValueError: a socket path with a NUL byte or one too long for sockaddr_un.
            if not self._failing:
                logger.debug("sd_notify to %s failed: %s", self.socket_path, error)
            self._failing = True
            return False
        self._failing = False
        return True


def _status(text: str) -> tuple[str, ...]:
    """``STATUS=text`` as one line (a newline would start a new assignment), or nothing."""
    line = " ".join(text.split())
    return (f"STATUS={line}",) if line else ()


def _watchdog_usec(environ: Mapping[str, str], pid: int) -> int | None:
    """The watchdog timeout meant for ``pid``, or None when unset, invalid or someone else's."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
        if "WATCHDOG_PID" in environ and int(environ["WATCHDOG_PID"]) != pid:
            return None
    except ValueError:
        return None
    return usec if usec > 0 else None
