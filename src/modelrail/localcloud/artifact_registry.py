"""A local Artifact Registry: the slice of its REST API v1 that
``adapters.artifact_registry.ArtifactRegistryPackages`` calls, for generic repositories.

The local control plane serves it beside the Cloud Run API, so the cloud adapter runs
unchanged against it (``MODELRAIL_ARTIFACT_REGISTRY_ENDPOINT``):

- ``POST /upload/v1/{repository}/genericArtifacts:create`` (``uploadType=multipart``:
  the ``packageId``/``versionId``/``filename`` metadata, then the file): stores one
  file; a file that exists is refused with ``ALREADY_EXISTS``, as Artifact Registry
  does. The answer carries the upload's operation, already done.
- ``GET /v1/{repository}/packages/{package}/versions``
- ``GET /v1/{repository}/files?filter=owner="{repository}/packages/P/versions/V"``:
  the version's files, their ids ``P:V:filename``, with SHA256 hashes (base64).

Files are kept by ``LocalPackageRepository`` under ``<state dir>/artifact-registry/
<repository>/``, so they outlive a restart. Only the repositories it was given exist.
"""

from __future__ import annotations

import base64
import re
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

import orjson

from modelrail.adapters.local.packages import LocalPackageRepository
from modelrail.localcloud.google_api import ApiError, ApiRequest, ApiRoutes, EmulatedApi

_REPOSITORY = (
    r"projects/(?P<project>[^/]+)/locations/(?P<location>[^/]+)"
    r"/repositories/(?P<repository>[^/:]+)"
)
_ROUTES = ApiRoutes(
    "Artifact Registry",
    [
        ("POST", re.compile(rf"^/upload/v1/(?P<name>{_REPOSITORY})/genericArtifacts:create$"),
         "upload"),
        ("GET", re.compile(rf"^/v1/(?P<name>{_REPOSITORY})/packages/(?P<package>[^/]+)/versions$"),
         "versions"),
        ("GET", re.compile(rf"^/v1/(?P<name>{_REPOSITORY})/files$"), "files"),
    ],
)  # fmt: skip
_OWNER = re.compile(
    r'^owner="(?P<repository>.+)/packages/(?P<package>[^/]+)/versions/(?P<version>[^/]+)"$'
)


class LocalArtifactRegistry(EmulatedApi):
    """Generic repositories of one project and location, on the local disk."""

    routes = _ROUTES

    def __init__(
        self, state_dir: Path, project: str, location: str, repositories: tuple[str, ...]
    ) -> None:
        self.project, self.location = project, location
        self.repositories = {
            name: LocalPackageRepository(state_dir / "artifact-registry" / name)
            for name in repositories
        }

    def answer(self, action: str, match: re.Match[str], request: ApiRequest) -> dict[str, Any]:
        name, packages = match["name"], self._repository(match)
        if action == "upload":
            return self._upload(name, packages, request.content_type, request.raw)
        if action == "versions":
            package = unquote(match["package"])
            return {
                "versions": [
                    {"name": f"{name}/packages/{package}/versions/{version}"}
                    for version in packages.versions(package)
                ]
            }
        return self._files(name, packages, parse_qs(request.query).get("filter", [""])[0])

    def _repository(self, match: re.Match[str]) -> LocalPackageRepository:
        found = self.repositories.get(match["repository"])
        if (match["project"], match["location"]) != (self.project, self.location) or not found:
            raise ApiError(404, "NOT_FOUND", f"Repository {match['name']} not found")
        return found

    def _upload(
        self, name: str, packages: LocalPackageRepository, content_type: str, raw: bytes
    ) -> dict[str, Any]:
        metadata, data = _multipart(content_type, raw)
        try:
            package, version, filename = (
                metadata["packageId"],
                metadata["versionId"],
                metadata["filename"],
            )
        except KeyError as exc:
            raise ApiError(400, "INVALID_ARGUMENT", f"missing {exc.args[0]}") from None
        if not packages.add(package, version, filename, data):
            raise ApiError(
                409, "ALREADY_EXISTS", f"{name}/files/{package}:{version}:{filename} already exists"
            )
        operation = f"projects/{self.project}/locations/{self.location}/operations/{uuid.uuid4()}"
        return {"operation": {"name": operation, "done": True}}

    def _files(self, name: str, packages: LocalPackageRepository, filter_: str) -> dict[str, Any]:
        owner = _OWNER.match(filter_)
        if owner is None or owner["repository"] != name:
            raise ApiError(
                400, "INVALID_ARGUMENT", f"only owner filters on {name}'s versions: {filter_!r}"
            )
        package, version = unquote(owner["package"]), unquote(owner["version"])
        return {
            "files": [
                {
                    "name": f"{name}/files/{package}:{version}:{filename}",
                    "owner": f"{name}/packages/{package}/versions/{version}",
                    "hashes": [
                        {
                            "type": "SHA256",
                            "value": base64.b64encode(bytes.fromhex(digest)).decode(),
                        }
                    ],
                }
                for filename, digest in packages.files(package, version).items()
            ]
        }


def _multipart(content_type: str, raw: bytes) -> tuple[dict[str, Any], bytes]:
    """The JSON metadata and the media of a ``multipart/related`` upload body."""
    boundary = re.search(r'boundary="?([^";]+)"?', content_type)
    if not content_type.startswith("multipart/related") or boundary is None:
        raise ApiError(400, "INVALID_ARGUMENT", "expected a multipart/related upload")
    delimiter = b"--" + boundary.group(1).encode()
    parts = [
        part.removeprefix(b"\r\n").removesuffix(b"\r\n") for part in raw.split(delimiter)[1:-1]
    ]
    contents = [part.partition(b"\r\n\r\n")[2] for part in parts]
    if len(contents) != 2:
        raise ApiError(400, "INVALID_ARGUMENT", "expected metadata and media parts")
    try:
        metadata: dict[str, Any] = orjson.loads(contents[0])
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, "INVALID_ARGUMENT", f"metadata is not JSON: {exc}") from None
    return metadata, contents[1]
