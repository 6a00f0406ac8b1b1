"""One Google REST API over google-auth's ``AuthorizedSession``: what the adapters that
speak REST (Artifact Registry, Cloud KMS) share.

With the default credentials against Google's endpoint; with ``api_endpoint`` set
(emulator mode: the local control plane) no credentials are sent to that endpoint;
nothing else differs. google-auth and requests are imported on the first call.
"""

from __future__ import annotations

import threading
from typing import Any

from modelrail.errors import PermanentError, TransientError

_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
_CALL_TIMEOUT_S = 60.0


class GoogleRestApi:
    """Calls to one API: ``call`` answers the HTTP status and the JSON body."""

    def __init__(self, name: str, default_endpoint: str, api_endpoint: str | None) -> None:
        self.name = name  # for messages: "Artifact Registry", "Cloud KMS"
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
        """One request; a request that cannot reach the API is a ``TransientError``."""
        import requests

        try:
            response = self.session.request(
                method, f"{self.endpoint}{path}", timeout=_CALL_TIMEOUT_S, **kwargs
            )
        except requests.RequestException as exc:
            raise TransientError(f"{self.name} {method} {path}: {exc}") from exc
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
        raise error(f"{self.name}: {action}: HTTP {status} {message}".strip())
