"""The sd_notify client: exact datagrams on real AF_UNIX sockets, environment parsing, no-ops."""

from __future__ import annotations

import logging
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.notify import Notifier


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A datagram socket bound where systemd's would be, and its NOTIFY_SOCKET value."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        yield str(path), sock


@pytest.fixture
def abstract_listener() -> Iterator[tuple[str, socket.socket]]:
    """The same in Linux's abstract namespace, which systemd uses for some managers."""
    name = f"voice-agent-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5)
        yield "@" + name, sock


def received(sock: socket.socket) -> bytes:
    return sock.recv(4096)


def test_ready_status_watchdog_stopping_arrive_as_exact_datagrams(
    listener: tuple[str, socket.socket],
) -> None:
    address, sock = listener
    notifier = Notifier(address, None)
    assert notifier.enabled

    assert notifier.ready("listening on default")
    assert received(sock) == b"READY=1\nSTATUS=listening on default"
    assert notifier.ready()
    assert received(sock) == b"READY=1"
    assert notifier.status("reconnecting to localhost:1883")
    assert received(sock) == b"STATUS=reconnecting to localhost:1883"
    assert notifier.watchdog()
    assert received(sock) == b"WATCHDOG=1"
    assert notifier.stopping()
    assert received(sock) == b"STOPPING=1"
    assert notifier.stopping("stopping: SIGTERM")
    assert received(sock) == b"STOPPING=1\nSTATUS=stopping: SIGTERM"


def test_abstract_namespace_socket(abstract_listener: tuple[str, socket.socket]) -> None:
    address, sock = abstract_listener
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address}, pid=os.getpid())
    assert notifier.ready("up")
    assert received(sock) == b"READY=1\nSTATUS=up"
    assert notifier.watchdog()
    assert received(sock) == b"WATCHDOG=1"


def test_status_cannot_inject_assignments(listener: tuple[str, socket.socket]) -> None:
    """A newline in a status (say, from an exception text) would start a new assignment."""
    address, sock = listener
    assert Notifier(address, None).status("broker down\nREADY=1\n")
    assert received(sock) == b"STATUS=broker down READY=1"
    assert not Notifier(address, None).status(" \n ")  # nothing to say: nothing sent


def test_reloading_carries_the_monotonic_clock(listener: tuple[str, socket.socket]) -> None:
    address, sock = listener
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    assert Notifier(address, None).reloading("reloading")
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    reloading, monotonic, status = received(sock).decode().split("\n")
    assert reloading == "RELOADING=1"
    assert status == "STATUS=reloading"
    key, value = monotonic.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_environment_with_watchdog_for_this_process(listener: tuple[str, socket.socket]) -> None:
    address, sock = listener
    environ = {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}
    notifier = Notifier.from_environ(environ, pid=4242)
    assert notifier.socket_path == address
    assert notifier.watchdog_usec == 30_000_000
    assert notifier.watchdog_interval == 15.0
    assert notifier.watchdog()
    assert received(sock) == b"WATCHDOG=1"


def test_watchdog_without_pid_is_ours() -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "/run/x", "WATCHDOG_USEC": "500000"}, 1)
    assert notifier.watchdog_interval == 0.25


@pytest.mark.parametrize(
    "environ",
    [
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"},  # meant for another process
        {"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "not-a-pid"},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "-5"},
        {"WATCHDOG_USEC": "30s"},
        {"WATCHDOG_USEC": ""},
        {},
    ],
)
def test_watchdog_disabled(environ: dict[str, str]) -> None:
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": "/run/systemd/notify", **environ}, 4242)
    assert notifier.enabled
    assert notifier.watchdog_usec is None
    assert notifier.watchdog_interval is None


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"NOTIFY_SOCKET": ""},
        {"NOTIFY_SOCKET": "relative/notify"},
        {"NOTIFY_SOCKET": "vsock:2:1234"},
        {"WATCHDOG_USEC": "30000000"},  # a watchdog with nowhere to ping is no watchdog
    ],
)
def test_not_under_systemd_is_a_no_op(environ: dict[str, str]) -> None:
    notifier = Notifier.from_environ(environ, os.getpid())
    assert not notifier.enabled
    assert notifier.watchdog_interval is None
    assert not notifier.ready("x")
    assert not notifier.status("x")
    assert not notifier.watchdog()
    assert not notifier.stopping()
    assert not notifier.reloading()


def test_send_failure_never_raises_and_logs_once_per_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """systemd gone (or the socket path wrong) must not take the agent down."""
    path = tmp_path / "notify"
    notifier = Notifier(str(path), 2_000_000)
    caplog.set_level(logging.DEBUG, logger="agent.notify")

    assert not notifier.watchdog()
    assert not notifier.watchdog()
    assert not notifier.ready("x")
    failures = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failures) == 1
    assert str(path) in failures[0].getMessage()

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(5)
        assert notifier.watchdog()  # the manager is back: sends resume
        assert received(sock) == b"WATCHDOG=1"
    path.unlink()
    assert not notifier.watchdog()  # a new outage is logged again
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 2


def test_unusable_socket_paths_do_not_raise() -> None:
    assert not Notifier("/" + "x" * 200, None).ready()  # longer than sockaddr_un allows
    assert not Notifier("/tmp/a\0b", None).ready()  # a NUL byte
    assert not Notifier(str(Path("/proc/self/fdinfo")), None).watchdog()  # not a socket


def test_the_kernel_vouches_for_our_pid(listener: tuple[str, socket.socket]) -> None:
    """NotifyAccess=main trusts a message only from the main PID, which systemd reads from the
    credentials the kernel attaches (SO_PASSCRED); a plain sendto() must carry ours."""
    address, sock = listener
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
    assert Notifier(address, None).ready()
    data, ancillary, _flags, _address = sock.recvmsg(4096, socket.CMSG_SPACE(12))
    assert data == b"READY=1"
    credentials = [
        struct.unpack("iII", payload[:12])
        for level, kind, payload in ancillary
        if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS
    ]
    assert credentials == [(os.getpid(), os.getuid(), os.getgid())]
