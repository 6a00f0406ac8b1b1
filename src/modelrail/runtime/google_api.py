"""What the local stand-ins for Google's APIs share: errors in Google's JSON format."""

from __future__ import annotations

from typing import Any

from modelrail.errors import ModelrailError


class ApiError(ModelrailError):
    """An error in Google's JSON error format (``{"error": {code, message, status}}``)."""

    def __init__(self, code: int, status: str, message: str) -> None:
        super().__init__(message)
        self.code, self.status, self.message = code, status, message

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}
