"""The smoke test every deployer runs before traffic may stay on a new revision."""

from __future__ import annotations

import socket
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import urllib3
from urllib3.connection import HTTPConnection

from modelrail.kernel.errors import DeploymentFailed

_http = urllib3.PoolManager(retries=False)


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


def smoke_test(
    url: str,
    model: str,
    version: int,
    instances: Sequence[Mapping[str, Any]],
    *,
    timeout_s: float = 10.0,
    headers: Mapping[str, str] | None = None,
    unix_socket: Path | None = None,
) -> None:
    """Raise ``DeploymentFailed`` unless ``url`` is ready and predicts with ``version``.

    With ``unix_socket`` the requests go to the server listening there (``url`` then
    only names it in messages): a deployer proves a candidate on its private socket
    while the shared port may still route to the previous server.
    """
    base = url.rstrip("/")
    http: Any = _http
    if unix_socket is not None:
        http, base = unix_pool(unix_socket), ""
    try:
        ready = http.request("GET", f"{base}/readyz", timeout=timeout_s, headers=headers)
        response = http.request(
            "POST",
            f"{base}/predict",
            body=orjson.dumps({"instances": list(instances)}),
            headers={"Content-Type": "application/json", **(headers or {})},
            timeout=timeout_s,
        )
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise DeploymentFailed(f"smoke test could not reach {url}: {exc}") from exc
    problems = []
    if ready.status != 200:
        problems.append(f"/readyz answered {ready.status}")
    if response.status != 200:
        problems.append(f"/predict answered {response.status}: {response.data[:300]!r}")
    else:
        body = orjson.loads(response.data)
        served = body.get("model", {})
        if served.get("name") != model or served.get("version") != version:
            problems.append(f"/predict served {served}, expected {model} v{version}")
        if len(body.get("predictions", [])) != len(instances):
            problems.append("/predict returned the wrong number of predictions")
    if problems:
        raise DeploymentFailed(
            f"smoke test of {model} v{version} at {url} failed: " + "; ".join(problems),
            {"url": url, "problems": problems},
        )


def predict(url: str, instances: Sequence[Mapping[str, Any]], *, timeout_s: float = 10.0) -> Any:
    """POST ``instances`` to ``url``'s /predict and return the decoded response."""
    response = _http.request(
        "POST",
        f"{url.rstrip('/')}/predict",
        body=orjson.dumps({"instances": list(instances)}),
        headers={"Content-Type": "application/json"},
        timeout=timeout_s,
    )
    return orjson.loads(response.data)
