"""Calls to a Google REST API (JSON over HTTP) through google-auth's ``AuthorizedSession``.

The Artifact Registry, Vertex AI and Cloud KMS adapters speak REST rather than through
Google's client libraries (Artifact Registry's has no generic upload; Vertex AI's,
``google-cloud-aiplatform``, is large and speaks gRPC, which the local control plane does
not serve; KMS's is two calls), so they share this: the default credentials against
Google's endpoint, or none against an ``api_endpoint`` override (emulator mode: the
local control plane); errors mapped to modelrail's (a bad request is permanent, the
rest transient); list pages followed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

from modelrail.kernel.errors import PermanentError, TransientError

_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_CALL_TIMEOUT_S = 60.0


class GoogleRest:
    """One API's endpoint, with a session made on first use."""

    def __init__(self, api: str, default_endpoint: str, api_endpoint: str | None) -> None:
        self.api = api  # its name in error messages
        self.api_endpoint = api_endpoint
        self.endpoint = (api_endpoint or default_endpoint).rstrip("/")
        self._session: Any = None
        self._lock = threading.Lock()

    @property
    def session(self) -> Any:
        """An ``AuthorizedSession``, made on first use (importing google-auth then)."""
        with self._lock:
            if self._session is None:
                import google.auth
                from google.auth.credentials import AnonymousCredentials
                from google.auth.transport.requests import AuthorizedSession

                if self.api_endpoint is None:
                    credentials, _ = google.auth.default(scopes=_SCOPES)
                else:
                    credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
                self._session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
            return self._session

    def call(self, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        """The status and JSON body of one request; a failed connection is transient."""
        import requests

        try:
            response = self.session.request(
                method, f"{self.endpoint}{path}", timeout=_CALL_TIMEOUT_S, **kwargs
            )
        except requests.RequestException as exc:
            raise TransientError(f"{self.api} {method} {path}: {exc}") from exc
        try:
            body = response.json() if response.content else {}
        except ValueError:
            body = {"error": {"message": response.text[:500]}}
        return response.status_code, body

    def check(self, status: int, body: Any, action: str) -> None:
        """Map an error answer: a bad request cannot succeed later, the rest can."""
        if status < 300:
            return
        message = (body.get("error") or {}).get("message", "") if isinstance(body, dict) else ""
        error = PermanentError if status == 400 else TransientError
        raise error(f"{self.api}: {action}: HTTP {status} {message}".strip())

    def pages(
        self, path: str, key: str, params: dict[str, str] | None = None
    ) -> Iterator[dict[str, Any]]:
        """Every item of a list call, page after page; nothing for a 404 (no parent yet)."""
        params = dict(params or {})
        while True:
            status, body = self.call("GET", path, params=params)
            if status == 404:
                return
            self.check(status, body, f"list {path}")
            yield from body.get(key, [])
            if not body.get("nextPageToken"):
                return
            params = {**params, "pageToken": body["nextPageToken"]}
