"""Hands a running server's listening socket to its successor (zero-downtime redeploys).

A server (granian's or gunicorn's master) started with ``MODELRAIL_HANDOFF_SOCKET``
serves, on that unix socket, duplicates of its TCP listening sockets (``SCM_RIGHTS``).
The local deployer fetches them and starts the next server on the very same socket
(``fd://N``), so old and new servers accept from one accept queue: when the old one is
retired, nothing queued is lost, unlike two ``SO_REUSEPORT`` sockets, where closing
one resets the connections waiting in its own queue.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from pathlib import Path

_MESSAGE = b"listeners"


def serve(path: Path, listeners: list[socket.socket]) -> threading.Thread:
    """Serve duplicates of the TCP sockets among ``listeners`` on unix socket ``path``."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o600)
    server.listen(8)
    fds = [
        listener.fileno()
        for listener in listeners
        if listener.family in (socket.AF_INET, socket.AF_INET6)
    ]

    def loop() -> None:
        while True:
            try:
                connection, _ = server.accept()
            except OSError:
                return
            with connection, contextlib.suppress(OSError):
                socket.send_fds(connection, [_MESSAGE], fds)

    thread = threading.Thread(target=loop, name="modelrail-handoff", daemon=True)
    thread.start()
    return thread


def fetch(path: Path, timeout_s: float = 5.0) -> list[socket.socket]:
    """The listening sockets the server behind ``path`` hands over."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
        client.settimeout(timeout_s)
        client.connect(str(path))
        message, fds, _, _ = socket.recv_fds(client, len(_MESSAGE), 8)
    if message != _MESSAGE or not fds:
        for fd in fds:
            os.close(fd)
        raise ConnectionError(f"{path} handed over no listening socket")
    return [socket.socket(fileno=fd) for fd in fds]
