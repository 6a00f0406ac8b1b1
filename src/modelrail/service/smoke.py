"""The smoke test every rollout passes before traffic may stay on a new revision, and
the CLI's prediction call."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import urllib3

from modelrail.kernel.errors import DeploymentFailed
from modelrail.kernel.ports import Candidate, Deployment

_http = urllib3.PoolManager(retries=False)


def smoke_test(
    candidate: Candidate, instances: Sequence[Mapping[str, Any]], *, timeout_s: float = 10.0
) -> None:
    """Raise ``DeploymentFailed`` unless the candidate is ready and predicts
    ``instances`` with its own model version."""
    model, version, url = candidate.model, candidate.version, candidate.url
    body = orjson.dumps({"instances": list(instances)})
    try:
        ready_status, _ = candidate.probe("GET", "/readyz", None, {}, timeout_s)
        status, data = candidate.probe(
            "POST", "/predict", body, {"Content-Type": "application/json"}, timeout_s
        )
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        raise DeploymentFailed(f"smoke test could not reach {url}: {exc}") from exc
    problems = []
    if ready_status != 200:
        problems.append(f"/readyz answered {ready_status}")
    if status != 200:
        problems.append(f"/predict answered {status}: {data[:300]!r}")
    else:
        answer = orjson.loads(data)
        served = answer.get("model", {})
        if served.get("name") != model or served.get("version") != version:
            problems.append(f"/predict served {served}, expected {model} v{version}")
        if len(answer.get("predictions", [])) != len(instances):
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


def served(deployment: Deployment, *, timeout_s: float = 5.0) -> dict[str, Any]:
    """What the deployment's service says it serves (its ``/readyz``, asked as its
    invoker where it needs one): ``model`` and ``version`` when it is ready, else
    ``status`` and why (``error``)."""
    try:
        if deployment.probe is not None:
            status, data = deployment.probe("GET", "/readyz", None, {}, timeout_s)
        else:
            url = f"{deployment.url.rstrip('/')}/readyz"
            response = _http.request("GET", url, timeout=timeout_s)
            status, data = response.status, response.data
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        return {"status": "unreachable", "error": str(exc)}
    try:
        answer = orjson.loads(data)
    except orjson.JSONDecodeError:
        answer = {}
    if status != 200 or not isinstance(answer, dict):
        detail = answer.get("detail") if isinstance(answer, dict) else None
        return {"status": f"not ready ({status})", "error": str(detail or "")}
    return answer
