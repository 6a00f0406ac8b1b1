"""A local Vertex AI Model Registry: the slice of the ``aiplatform`` REST API v1 that
``adapters.vertex_models.VertexModelCatalog`` calls.

The local control plane serves it beside the Cloud Run and Artifact Registry APIs, so
the cloud adapter runs unchanged against it (``MODELRAIL_VERTEX_ENDPOINT``):

- ``POST /v1/{parent}/models:upload``: ``modelId`` creates the model with its first
  version (``ALREADY_EXISTS`` if it exists), ``parentModel`` adds a version
  (``NOT_FOUND`` without the model). The answer is a long-running operation, not done
  yet; reading it (``GET /v1/{operation name}``) finds it done with an
  ``UploadModelResponse`` (``model``, ``modelVersionId``).
- ``GET /v1/{parent}/models/{model}``: the model (its default version).
- ``GET /v1/{parent}/models/{model}:listVersions``, with no filter or one
  ``labels.KEY="VALUE"``.
- ``POST /v1/{parent}/models/{model}@{version id}:mergeVersionAliases``: ``name`` adds
  the alias (taking it off the version that had it), ``-name`` removes it.

Models are kept by ``LocalModels`` under ``<state dir>/vertex-ai/``, so they
outlive a restart. Only the project and location it was given exist.
"""

from __future__ import annotations

import re
import threading
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import orjson

from modelrail.adapters.local.models import LocalModels
from modelrail.domain.config import VERTEX_MODEL_ID
from modelrail.localcloud.google_api import ApiError, ApiRequest, ApiRoutes, EmulatedApi

_PARENT = r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
_ROUTES = ApiRoutes(
    "Vertex AI",
    [
        ("POST", re.compile(rf"^/v1/{_PARENT}/models:upload$"), "upload"),
        ("GET", re.compile(rf"^/v1/{_PARENT}/models/(?P<model>[^/:@]+)$"), "get"),
        ("GET", re.compile(rf"^/v1/{_PARENT}/models/(?P<model>[^/:@]+):listVersions$"), "versions"),
        ("POST", re.compile(
            rf"^/v1/{_PARENT}/models/(?P<model>[^/:@]+)@(?P<version>[^/:]+):mergeVersionAliases$"
        ), "merge"),
        ("GET", re.compile(
            rf"^/v1/{_PARENT}/models/(?P<model>[^/:@]+)/operations/(?P<operation>[^/:]+)$"
        ), "operation"),
    ],
)  # fmt: skip
_LABEL_FILTER = re.compile(r'^labels\.(?P<key>[a-z][a-z0-9_-]*)="(?P<value>[^"]*)"$')
_TYPE = "type.googleapis.com/google.cloud.aiplatform.v1."


class LocalVertexAi(EmulatedApi):
    """Vertex AI models of one project and location, on the local disk."""

    routes = _ROUTES

    def __init__(self, state_dir: Path, project: str, location: str) -> None:
        self.project, self.location = project, location
        self.parent = f"projects/{project}/locations/{location}"
        self.models = LocalModels(state_dir / "vertex-ai", project, location)
        self._operations: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def answer(self, action: str, match: re.Match[str], request: ApiRequest) -> dict[str, Any]:
        if (match["project"], match["location"]) != (self.project, self.location):
            raise ApiError(404, "NOT_FOUND", f"{request.path}: no such location here")
        body: dict[str, Any] = orjson.loads(request.raw) if request.raw else {}
        if action == "upload":
            return self._upload(body)
        if action == "merge":
            return self._merge(match["model"], match["version"], body)
        if action == "operation":
            return self._operation(f"{self.parent}/models/{match['model']}", match["operation"])
        versions = self.models.versions(match["model"])
        if not versions:
            raise ApiError(404, "NOT_FOUND", f"{self.parent}/models/{match['model']} not found")
        if action == "get":
            return next(v for v in versions if "default" in v["versionAliases"])
        return {"models": _filtered(versions, parse_qs(request.query).get("filter", [""])[0])}

    def _upload(self, body: dict[str, Any]) -> dict[str, Any]:
        model = body.get("model")
        if not isinstance(model, dict) or not model.get("displayName"):
            raise ApiError(400, "INVALID_ARGUMENT", "model with a displayName is required")
        if not (model.get("containerSpec") or {}).get("imageUri"):
            raise ApiError(400, "INVALID_ARGUMENT", "model.containerSpec.imageUri is required")
        parent_model, model_id = body.get("parentModel"), body.get("modelId")
        try:
            if parent_model:
                prefix = f"{self.parent}/models/"
                if not str(parent_model).startswith(prefix):
                    raise ApiError(400, "INVALID_ARGUMENT", f"parentModel not in {self.parent}")
                created = self.models.create(
                    str(parent_model).removeprefix(prefix), model, new_model=False
                )
            elif model_id and VERTEX_MODEL_ID.match(str(model_id)):
                created = self.models.create(str(model_id), model, new_model=True)
            else:
                raise ApiError(
                    400, "INVALID_ARGUMENT", "a parentModel, or a modelId matching [a-z][a-z0-9_-]*"
                )
        except FileExistsError as exc:
            raise ApiError(409, "ALREADY_EXISTS", str(exc)) from None
        except FileNotFoundError as exc:
            raise ApiError(404, "NOT_FOUND", str(exc)) from None
        name = f"{created['name']}/operations/{uuid.uuid4().int % 10**18}"
        operation = {
            "name": name,
            "metadata": {"@type": f"{_TYPE}UploadModelOperationMetadata"},
            "done": True,
            "response": {
                "@type": f"{_TYPE}UploadModelResponse",
                "model": created["name"],
                "modelVersionId": created["versionId"],
            },
        }
        with self._lock:
            self._operations[name] = operation
        # Answered while still running, as Vertex AI does: the caller polls it.
        return {key: value for key, value in operation.items() if key != "response"} | {
            "done": False
        }

    def _operation(self, model: str, operation_id: str) -> dict[str, Any]:
        name = f"{model}/operations/{operation_id}"
        with self._lock:
            found = self._operations.get(name)
        if found is None:
            raise ApiError(404, "NOT_FOUND", f"operation {name} not found")
        return found

    def _merge(self, model: str, version_id: str, body: dict[str, Any]) -> dict[str, Any]:
        aliases = body.get("versionAliases")
        if not isinstance(aliases, list) or not aliases:
            raise ApiError(400, "INVALID_ARGUMENT", "versionAliases is required")
        try:
            return self.models.merge_aliases(model, version_id, [str(a) for a in aliases])
        except FileNotFoundError as exc:
            raise ApiError(404, "NOT_FOUND", str(exc)) from None
        except ValueError as exc:
            raise ApiError(400, "INVALID_ARGUMENT", str(exc)) from None


def _filtered(versions: list[dict[str, Any]], filter_: str) -> list[dict[str, Any]]:
    if not filter_:
        return versions
    match = _LABEL_FILTER.match(filter_)
    if match is None:
        raise ApiError(400, "INVALID_ARGUMENT", f'only labels.KEY="VALUE" filters: {filter_!r}')
    return [v for v in versions if v.get("labels", {}).get(match["key"]) == match["value"]]
