"""RFC 9457 problem details: every error the service answers is one of these."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

PROBLEM_JSON = "application/problem+json"
_TYPE_BASE = "urn:modelrail:problem:"

# slug -> (status, title). The slug is the stable, machine-readable part of `type`.
PROBLEM_TYPES: dict[str, tuple[int, str]] = {
    "bad-request": (400, "The request is malformed"),
    "malformed-json": (400, "The request body is not valid JSON"),
    "not-found": (404, "No such resource"),
    "method-not-allowed": (405, "Method not allowed"),
    "request-timeout": (408, "The request body did not arrive in time"),
    "payload-too-large": (413, "The request body is larger than the service accepts"),
    "too-many-instances": (413, "The request holds more instances than the service accepts"),
    "unsupported-media-type": (415, "The request body must be application/json"),
    "invalid-request": (422, "The request does not have the shape /predict accepts"),
    "invalid-instances": (422, "Some instances do not match the model's feature schema"),
    "not-ready": (503, "The model is not loaded"),
    "internal-error": (500, "The service failed to answer"),
}


class Problem(Exception):
    """An error answer: ``slug`` names its type; ``extensions`` add members."""

    def __init__(self, slug: str, detail: str, **extensions: Any) -> None:
        super().__init__(detail)
        self.slug = slug
        self.status, self.title = PROBLEM_TYPES[slug]
        self.detail = detail
        self.extensions = extensions

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": _TYPE_BASE + self.slug,
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
        }
        if instance is not None:
            body["instance"] = instance
        body.update(self.extensions)
        return body


# One problem (or warning) located in the request: a JSON pointer and what is wrong there.
POINTED_ITEM: Mapping[str, Any] = {
    "type": "object",
    "required": ["pointer", "detail"],
    "properties": {
        "pointer": {"type": "string"},
        "detail": {"type": "string"},
        "instance": {"type": "integer"},
        "feature": {"type": "string"},
    },
}


def problem_schema() -> Mapping[str, Any]:
    """The OpenAPI schema of a problem body."""
    return {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string", "format": "uri-reference"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "request_id": {"type": "string"},
            "limit": {"type": "integer"},
            "errors": {
                "type": "array",
                "items": POINTED_ITEM,
            },
        },
    }
