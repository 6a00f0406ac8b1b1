"""Vertex AI's Model Registry over its REST API v1 (the cloud's ``ModelCatalog``,
through ``catalog.Catalog``).

Through ``GoogleRest`` (google-auth's ``AuthorizedSession``), like the Artifact Registry
adapter, at ``https://{location}-aiplatform.googleapis.com``; with ``api_endpoint`` set
(emulator mode: the local control plane) without credentials. Google's
``google-cloud-aiplatform`` client would add hundreds of megabytes to the register and
deploy functions for four calls, and speaks gRPC, which the control plane does not
serve. The calls, on ``parent`` = ``projects/P/locations/L``:

- ``GET /v1/{parent}/models/{model}``: is there a model yet;
- ``GET /v1/{parent}/models/{model}:listVersions?filter=labels.modelrail_version="N"``:
  the versions carrying a modelrail version (to upload nothing twice, or refuse);
- ``POST /v1/{parent}/models:upload`` with ``modelId`` (the first version creates the
  model) or ``parentModel`` (a new version of it); it answers a long-running operation,
  polled with ``GET /v1/{operation name}`` until ``done``;
- ``POST /v1/{parent}/models/{model}@{version id}:mergeVersionAliases``: an alias added
  to one version is taken off the version that had it (a model's alias names one
  version); ``-alias`` takes it off.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from modelrail.adapters.google.rest import GoogleRest
from modelrail.domain.catalog import version_filter
from modelrail.kernel.errors import PermanentError, TransientError

# An upload's operation is polled for at most this long (the register subscription's
# ack deadline is 600 s); past it the delivery fails and its redelivery looks again.
_OPERATION_TIMEOUT_S = 480.0
_POLL_FIRST_S, _POLL_MAX_S = 0.2, 10.0
# google.rpc.Code values an operation can fail with that a retry cannot fix.
_PERMANENT_CODES = frozenset({3, 9, 11})  # INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE


class VertexModels:
    """The models of one project and location in Vertex AI."""

    def __init__(
        self,
        project: str,
        location: str,
        api_endpoint: str | None = None,
        *,
        operation_timeout_s: float = _OPERATION_TIMEOUT_S,
    ) -> None:
        self.parent = f"projects/{project}/locations/{location}"
        self.operation_timeout_s = operation_timeout_s
        self.api = GoogleRest(
            "Vertex AI", f"https://{location}-aiplatform.googleapis.com", api_endpoint
        )

    def _name(self, model_id: str) -> str:
        return f"{self.parent}/models/{model_id}"

    def exists(self, model_id: str) -> bool:
        status, body = self.api.call("GET", f"/v1/{self._name(model_id)}")
        if status == 404:
            return False
        self.api.check(status, body, f"get {self._name(model_id)}")
        return True

    def versions(self, model_id: str, version: int | None = None) -> list[dict[str, Any]]:
        params = {} if version is None else {"filter": version_filter(version)}
        path = f"/v1/{self._name(model_id)}:listVersions"
        return list(self.api.pages(path, "models", params))

    def create(
        self, model_id: str, resource: Mapping[str, Any], *, new_model: bool
    ) -> Mapping[str, Any]:
        target = {"modelId": model_id} if new_model else {"parentModel": self._name(model_id)}
        status, operation = self.api.call(
            "POST", f"/v1/{self.parent}/models:upload", json={**target, "model": resource}
        )
        if status == 409 and new_model:
            raise FileExistsError(f"{self._name(model_id)} already exists")
        self.api.check(status, operation, f"upload a version of {model_id}")
        response: Mapping[str, Any] = self._wait(operation, f"upload of {model_id}")
        return response

    def merge_aliases(
        self, model_id: str, version_id: str, aliases: Sequence[str]
    ) -> dict[str, Any]:
        name = f"{self._name(model_id)}@{version_id}"
        status, body = self.api.call(
            "POST", f"/v1/{name}:mergeVersionAliases", json={"versionAliases": list(aliases)}
        )
        self.api.check(status, body, f"merge aliases {', '.join(aliases)} on {name}")
        merged: dict[str, Any] = body
        return merged

    def _wait(self, operation: dict[str, Any], what: str) -> dict[str, Any]:
        """Poll a long-running operation until it is done; its response, or what it
        failed with raised."""
        name = operation.get("name")
        deadline = time.monotonic() + self.operation_timeout_s
        interval = _POLL_FIRST_S
        while not operation.get("done"):
            if time.monotonic() >= deadline:
                raise TransientError(
                    f"Vertex AI: {what} not done after {self.operation_timeout_s:.0f} s ({name})"
                )
            time.sleep(interval)
            interval = min(interval * 2, _POLL_MAX_S)
            status, operation = self.api.call("GET", f"/v1/{name}")
            self.api.check(status, operation, f"get operation {name}")
        error = operation.get("error")
        if error:
            code = int(error.get("code", 2))
            kind = PermanentError if code in _PERMANENT_CODES else TransientError
            raise kind(f"Vertex AI: {what} failed: {error.get('message', '')} (code {code})")
        response: dict[str, Any] = operation.get("response", {})
        return response
