"""PackageRepository on an Artifact Registry generic repository (the REST API v1).

Google's Python client for Artifact Registry has no call for the generic upload (a
media upload, ``genericArtifacts.upload``), so this adapter speaks the REST API
through google-auth's ``AuthorizedSession`` for every call, with the default
credentials against ``artifactregistry.googleapis.com``. With ``api_endpoint`` set
(emulator mode: the local control plane) it sends no credentials to that endpoint;
nothing else differs. The calls:

- ``POST /upload/v1/{repository}/genericArtifacts:create?uploadType=multipart``, one
  per file (``packageId``, ``versionId``, ``filename`` and the bytes); a file that
  exists is refused with ``ALREADY_EXISTS``, then compared by its sha256;
- ``GET /v1/{repository}/files?filter=owner="…/packages/P/versions/V"``: a version's
  files with their sha256, read before uploading (to resume or refuse) and after it;
- ``GET /v1/{repository}/packages/P/versions``: a package's versions.

An upload returns a long-running operation that completes once the files are stored;
the adapter does not read it but lists the version's files until every one is there
(the writer role on the repository allows both calls).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote, unquote

import orjson

from modelrail.adapters.google.rest import GoogleRest
from modelrail.kernel.errors import TransientError
from modelrail.kernel.ports import PublishedVersion, files_to_publish

DEFAULT_ENDPOINT = "https://artifactregistry.googleapis.com"
# How long uploaded files may take to be listed (the upload's operation completing).
_LISTED_TIMEOUT_S = 60.0
_POLL_FIRST_S, _POLL_MAX_S = 0.1, 2.0


class ArtifactRegistryPackages:
    """Generic packages in one Artifact Registry repository."""

    def __init__(
        self, project: str, location: str, repository: str, api_endpoint: str | None = None
    ) -> None:
        self.repository = f"projects/{project}/locations/{location}/repositories/{repository}"
        self.api = GoogleRest("Artifact Registry", DEFAULT_ENDPOINT, api_endpoint)
        self.endpoint = self.api.endpoint

    def _version_name(self, package: str, version: str) -> str:
        package, version = quote(package, safe=""), quote(version, safe="")
        return f"{self.repository}/packages/{package}/versions/{version}"

    # -- PackageRepository -------------------------------------------------------
    def publish(self, package: str, version: str, files: Mapping[str, bytes]) -> PublishedVersion:
        for name in files_to_publish(package, version, self.files(package, version), files):
            status, body = self._upload(package, version, name, files[name])
            if status == 409:  # ALREADY_EXISTS: a concurrent publication got there first
                files_to_publish(package, version, self.files(package, version), files)
            else:
                self.api.check(status, body, f"upload {name} to {package} {version}")
        listed = self._listed(package, version, set(files))
        files_to_publish(package, version, listed, files)
        return PublishedVersion(
            uri=f"{self.endpoint}/v1/{self._version_name(package, version)}",
            package=package,
            version=version,
            files=listed,
        )

    def versions(self, package: str) -> list[str]:
        path = f"/v1/{self.repository}/packages/{quote(package, safe='')}/versions"
        return sorted(v["name"].rsplit("/", 1)[-1] for v in self.api.pages(path, "versions"))

    def files(self, package: str, version: str) -> dict[str, str]:
        owner = self._version_name(package, version)
        found = {}
        files = self.api.pages(
            f"/v1/{self.repository}/files", "files", {"filter": f'owner="{owner}"'}
        )
        for file in files:
            # A generic file's id is package:version:filename (escaped in the name).
            name = unquote(file["name"].rsplit("/", 1)[-1]).split(":", 2)[-1]
            sha256 = [h["value"] for h in file.get("hashes", []) if h.get("type") == "SHA256"]
            if sha256:
                found[name] = base64.b64decode(sha256[0]).hex()
        return found

    # -- REST --------------------------------------------------------------------
    def _upload(self, package: str, version: str, name: str, data: bytes) -> tuple[int, Any]:
        boundary = uuid.uuid4().hex
        metadata = orjson.dumps({"packageId": package, "versionId": version, "filename": name})
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                metadata,
                f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        return self.api.call(
            "POST",
            f"/upload/v1/{self.repository}/genericArtifacts:create",
            params={"uploadType": "multipart", "alt": "json"},
            data=body,
            headers={"Content-Type": f"multipart/related; boundary={boundary}"},
        )

    def _listed(self, package: str, version: str, names: set[str]) -> dict[str, str]:
        deadline = time.monotonic() + _LISTED_TIMEOUT_S
        interval = _POLL_FIRST_S
        while True:
            listed = self.files(package, version)
            if names <= set(listed):
                return listed
            if time.monotonic() >= deadline:
                raise TransientError(
                    f"{package} {version}: uploaded files not listed after "
                    f"{_LISTED_TIMEOUT_S:.0f} s: {sorted(names - set(listed))}"
                )
            time.sleep(interval)
            interval = min(interval * 2, _POLL_MAX_S)
