"""What a model's retrain policies remember: one small object per policy,
``models/<model>/policies/<name>.json`` in the artifact bucket (the last retrain on
drift, the last time a schedule fired), moved by compare-and-set, so two processes
taking the same decision at once take it once."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from modelrail.kernel.errors import NotFound, PreconditionFailed
from modelrail.kernel.ports import BlobStore


@dataclasses.dataclass(frozen=True)
class PolicyState:
    """A policy's object as read: its value (None before its first decision) and the
    generation a replacement must find."""

    key: str
    value: dict[str, Any] | None
    generation: int  # 0: no object yet

    def replace(self, store: BlobStore, value: dict[str, Any]) -> bool:
        """Write ``value`` if nobody moved the object since it was read; False if
        somebody did (the decision is theirs)."""
        try:
            store.write(
                self.key,
                orjson.dumps(value),
                if_generation_match=self.generation,
                content_type="application/json",
            )
        except PreconditionFailed:
            return False
        return True


def read(store: BlobStore, model: str, policy: str) -> PolicyState:
    key = f"models/{model}/policies/{policy}.json"
    try:
        blob = store.read(key)
    except NotFound:
        return PolicyState(key, None, 0)
    return PolicyState(key, orjson.loads(blob.data), blob.generation)
