"""What the local stand-ins for Google's APIs share: errors in Google's JSON format, and
the routing of a request to the action of one API's slice."""

from __future__ import annotations

import abc
import dataclasses
import re
from collections.abc import Sequence
from typing import Any, ClassVar

from modelrail.kernel.errors import ModelrailError


class ApiError(ModelrailError):
    """An error in Google's JSON error format (``{"error": {code, message, status}}``)."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


class ApiRoutes:
    """The requests one API's slice answers: (method, path pattern, action) each."""

    def __init__(self, api: str, routes: Sequence[tuple[str, re.Pattern[str], str]]) -> None:
        self.api = api  # for messages: "Cloud KMS", "Vertex AI"
        self.routes = routes

    def handles(self, path: str) -> bool:
        return any(pattern.match(path) for _, pattern, _ in self.routes)

    def match(self, method: str, path: str) -> tuple[str, re.Match[str]]:
        """The action for ``method`` on ``path`` and what its pattern matched; a 405 for
        another method on a known path, a 404 for an unknown path."""
        for route_method, pattern, action in self.routes:
            match = pattern.match(path)
            if match is None:
                continue
            if route_method != method:
                raise ApiError(405, "UNIMPLEMENTED", f"{method} {path} is not supported")
            return action, match
        raise ApiError(404, "NOT_FOUND", f"{method} {path}: no such {self.api} API here")


@dataclasses.dataclass(frozen=True)
class ApiRequest:
    """One request to an emulated API: its path, query string, content type and body."""

    path: str
    query: str
    content_type: str
    raw: bytes


class EmulatedApi(abc.ABC):
    """One of Google's APIs answered locally: the control plane hands it the requests
    whose path its ``routes`` match (``handles``); ``dispatch`` finds the action and
    ``answer`` (each API's own) answers it."""

    routes: ClassVar[ApiRoutes]

    def handles(self, path: str) -> bool:
        return self.routes.handles(path)

    def dispatch(
        self, method: str, path: str, query: str, content_type: str, raw: bytes
    ) -> dict[str, Any]:
        action, match = self.routes.match(method, path)
        return self.answer(action, match, ApiRequest(path, query, content_type, raw))

    @abc.abstractmethod
    def answer(self, action: str, match: re.Match[str], request: ApiRequest) -> dict[str, Any]:
        """The JSON answer to ``action`` (``match``: what its route's pattern matched)."""
