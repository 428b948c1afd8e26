"""A throwaway MQTT broker on the loopback, for the demo when no broker is configured.

mosquitto is preferred when its binary is installed (it is what users run); otherwise the
pure-Python ``amqtt`` (``pip install 'voice-agent[demo]'``) runs in a thread of this
process. Either listens on a free port of 127.0.0.1, anonymous, without persistence, and
is gone when :meth:`EmbeddedBroker.stop` returns.
"""

from __future__ import annotations

import asyncio
import getpass
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Final, Literal

from agent.errors import UsageError

__all__ = [
    "BROKERS",
    "BrokerError",
    "EmbeddedBroker",
    "free_port",
    "listening",
    "start_broker",
    "terminate",
]

HOST: Final = "127.0.0.1"
BROKERS: Final = ("auto", "mosquitto", "amqtt")
Kind = Literal["mosquitto", "amqtt"]


class BrokerError(UsageError):
    """No embedded broker could be started; ``str()`` says why and what to install."""


def free_port() -> int:
    """A TCP port on the loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def listening(port: int, host: str = HOST) -> bool:
    """Whether something accepts TCP connections on ``host:port`` right now."""
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


def terminate(process: subprocess.Popen[bytes], grace: float = 5.0) -> None:
    """Stop ``process``: SIGTERM, then SIGKILL if it is still there after ``grace`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _mosquitto() -> str | None:
    return shutil.which("mosquitto") or (
        "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None
    )


class EmbeddedBroker:
    """A running broker: ``kind``, ``port``; stop it with :meth:`stop` (or ``with``)."""

    def __init__(self, kind: Kind, port: int) -> None:
        self.kind = kind
        self.port = port
        self.host = HOST
        self._process: subprocess.Popen[bytes] | None = None
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._amqtt: Any = None

    def __enter__(self) -> EmbeddedBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _start_mosquitto(self, binary: str, timeout: float) -> None:
        self._directory = tempfile.TemporaryDirectory(prefix="voice-agent-broker-")
        directory = Path(self._directory.name)
        lines = [f"listener {self.port} {HOST}", "allow_anonymous true", "persistence false"]
        if getpass.getuser() == "root":
            # mosquitto would drop root to the "mosquitto" user, who cannot read our temp dir.
            lines.append("user root")
        config = directory / "mosquitto.conf"
        config.write_text("\n".join(lines) + "\n")
        log = (directory / "mosquitto.log").open("wb")
        self._process = subprocess.Popen(
            [binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        self._wait(timeout, lambda: self._process is not None and self._process.poll() is None)

    def _start_amqtt(self, timeout: float) -> None:
        try:
            from amqtt.broker import Broker
        except ImportError:
            raise BrokerError(
                "no MQTT broker: install mosquitto (apt-get install mosquitto) or amqtt"
                " (pip install 'voice-agent[demo]'), or give one with --host"
            ) from None
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"{HOST}:{self.port}"}},
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {}},
        }
        loop = asyncio.new_event_loop()
        started = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(loop)
            self._amqtt = Broker(config, loop=loop)
            loop.run_until_complete(self._amqtt.start())
            started.set()
            loop.run_forever()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="amqtt", daemon=True)
        self._thread.start()
        started.wait(timeout)
        self._wait(timeout, lambda: self._thread is not None and self._thread.is_alive())

    def _wait(self, timeout: float, alive: Any) -> None:
        deadline = time.monotonic() + timeout
        while not listening(self.port):
            if not alive() or time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"the embedded {self.kind} did not start on port {self.port}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the broker and remove its files."""
        if self._process is not None:
            terminate(self._process)
            self._process = None
        if self._loop is not None and self._thread is not None:
            loop = self._loop
            if self._amqtt is not None:
                asyncio.run_coroutine_threadsafe(self._amqtt.shutdown(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join(10)
            self._loop = self._thread = self._amqtt = None
        if self._directory is not None:
            self._directory.cleanup()
            self._directory = None


def start_broker(kind: str = "auto", timeout: float = 10.0) -> EmbeddedBroker:
    """Start ``kind`` ("auto": mosquitto if installed, else amqtt) on a free loopback port."""
    binary = _mosquitto()
    if kind == "mosquitto" and binary is None:
        raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
    chosen: Kind = "mosquitto" if kind != "amqtt" and binary is not None else "amqtt"
    broker = EmbeddedBroker(chosen, free_port())
    if chosen == "mosquitto":
        assert binary is not None
        broker._start_mosquitto(binary, timeout)
    else:
        broker._start_amqtt(timeout)
    return broker
