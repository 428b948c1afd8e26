"""A TCP proxy between the agent and a real mosquitto that can cut the link one way or both.

Each accepted connection gets its own upstream connection and a thread pumping bytes both
ways. The test flips ``upstream`` (agent -> broker) and ``downstream`` (broker -> agent)
to swallow one direction (the bytes are read and thrown away, as a half-dead Wi-Fi link
does), ``accepting`` to refuse new connections (the link is down), and calls ``cut()`` to
close every open connection (a broker or router dying mid-flight).
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading

from tests.agent.broker import HOST


class Proxy:
    """Listens on a free loopback port and forwards to ``HOST:target``."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.upstream = True
        self.downstream = True
        self.accepting = True
        self.connections = 0
        """Connections accepted and forwarded so far."""
        self.discarded = 0
        """Bytes from the agent thrown away while ``upstream`` was off."""
        self.swallowed = 0
        """Bytes from the broker thrown away while ``downstream`` was off."""
        self._listener = socket.create_server((HOST, 0))
        self.port: int = self._listener.getsockname()[1]
        self._open: list[tuple[socket.socket, socket.socket]] = []
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="proxy", daemon=True)
        self._thread.start()

    def __enter__(self) -> Proxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def cut(self) -> None:
        """Close every open connection, both sides."""
        with self._lock:
            pairs, self._open = self._open, []
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def close(self) -> None:
        self._closed = True
        self._listener.close()
        self.cut()
        self._thread.join(2)

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if not self.accepting:
                client.close()
                continue
            try:
                server = socket.create_connection((HOST, self.target), timeout=2)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.append((client, server))
                self.connections += 1
            threading.Thread(
                target=self._pump, args=(client, server), name="proxy-pump", daemon=True
            ).start()

    def _pump(self, client: socket.socket, server: socket.socket) -> None:
        try:
            while True:
                ready, _, _ = select.select([client, server], [], [], 0.2)
                if self._closed:
                    return
                for sock in ready:
                    data = sock.recv(65536)
                    if not data:
                        return
                    if sock is client:
                        if self.upstream:
                            server.sendall(data)
                        else:
                            self.discarded += len(data)
                    elif self.downstream:
                        client.sendall(data)
                    else:
                        self.swallowed += len(data)
        except (OSError, ValueError):
            return
        finally:
            for sock in (client, server):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            with self._lock:
                if (client, server) in self._open:
                    self._open.remove((client, server))
