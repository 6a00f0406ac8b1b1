"""Helpers shared by the policies (checkov hands every attribute over as a list)."""

from __future__ import annotations

from typing import Any

PUBLIC_MEMBERS = ("allUsers", "allAuthenticatedUsers")
# Predefined roles holding storage.objects.create, .update or .delete on a bucket's objects.
OBJECT_WRITE_ROLES = frozenset(
    {
        "roles/storage.admin",
        "roles/storage.objectAdmin",
        "roles/storage.objectCreator",
        "roles/storage.objectUser",
        "roles/storage.legacyBucketOwner",
        "roles/storage.legacyBucketWriter",
        "roles/storage.legacyObjectOwner",
    }
)
# How a condition limits a grant to some objects: projects/_/buckets/<b>/objects/<prefix>.
OBJECT_NAME_CONDITION = "resource.name.startsWith("


def first(conf: dict[str, Any], key: str) -> Any:
    """The attribute's value, unwrapped from checkov's one-element list."""
    value = conf.get(key)
    if isinstance(value, list):
        return value[0] if value else None
    return value


def flatten(value: Any) -> list[Any]:
    if isinstance(value, list):
        return [leaf for item in value for leaf in flatten(item)]
    return [value]
