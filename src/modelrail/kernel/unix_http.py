"""HTTP over a unix socket: how the local staging supervisor and its deployer reach a
candidate server on its private socket while the shared port still routes elsewhere."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path

import urllib3
from urllib3.connection import HTTPConnection

from modelrail.kernel.ports import Probe


class _UnixConnection(HTTPConnection):
    """HTTP over a unix socket (a candidate server's private socket)."""

    unix_socket = ""

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout if isinstance(self.timeout, int | float) else None)
        sock.connect(self.unix_socket)
        self.sock = sock


def unix_pool(path: Path) -> urllib3.HTTPConnectionPool:
    """A connection pool whose requests go to the server listening on ``path``."""
    connection_class = type("_Bound", (_UnixConnection,), {"unix_socket": str(path)})
    pool = urllib3.HTTPConnectionPool("localhost", retries=False, maxsize=1)
    pool.ConnectionCls = connection_class
    return pool


def unix_probe(path: Path) -> Probe:
    """A ``Probe`` of the server listening on the unix socket ``path``."""
    pool = unix_pool(path)

    def probe(
        method: str, url_path: str, body: bytes | None, headers: Mapping[str, str], timeout_s: float
    ) -> tuple[int, bytes]:
        response = pool.request(
            method, url_path, body=body, headers=dict(headers), timeout=timeout_s
        )
        return response.status, response.data

    return probe
