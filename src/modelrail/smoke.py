"""The smoke test every deployer runs before traffic may stay on a new revision."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import urllib3

from modelrail.errors import DeploymentFailed

_http = urllib3.PoolManager(retries=False)


def smoke_test(
    url: str,
    model: str,
    version: int,
    instances: Sequence[Mapping[str, Any]],
    *,
    timeout_s: float = 10.0,
    headers: Mapping[str, str] | None = None,
) -> None:
    """Raise ``DeploymentFailed`` unless ``url`` is ready and predicts with ``version``."""
    base = url.rstrip("/")
    try:
        ready = _http.request("GET", f"{base}/readyz", timeout=timeout_s, headers=headers)
        response = _http.request(
            "POST",
            f"{base}/predict",
            body=orjson.dumps({"instances": list(instances)}),
            headers={"Content-Type": "application/json", **(headers or {})},
            timeout=timeout_s,
        )
    except urllib3.exceptions.HTTPError as exc:
        raise DeploymentFailed(f"smoke test could not reach {base}: {exc}") from exc
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
            f"smoke test of {model} v{version} at {base} failed: " + "; ".join(problems),
            {"url": base, "problems": problems},
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
