"""Manifests for registry tests that register versions without running the pipeline."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from modelrail.domain.lineage import Lineage
from modelrail.domain.registry import FileEntry, Manifest

Describe = Callable[[int, Mapping[str, FileEntry]], Manifest]


def describe(model: str, run_id: str, **fields: Any) -> Describe:
    """What ``Registry.register`` asks for: the manifest of ``model``'s version for
    ``run_id``, with ``fields`` over plain defaults (a blessed first model)."""

    def manifest(version: int, files: Mapping[str, FileEntry]) -> Manifest:
        values: dict[str, Any] = {
            "format": "lightgbm-text",
            "created_at": "2026-01-01T00:00:00Z",
            "features": {"objective": "multiclass", "target": "species", "features": []},
            "best_iteration": 1,
            "params": {},
            "train_metrics": {},
            "metrics": {},
            "champion": None,
            "verdict": {"blessed": True, "checks": [], "reasons": []},
            "lineage": Lineage(
                trigger={"kind": "unknown", "key": run_id},
                config={"hash": "0" * 64, "model": model},
            ),
            "examples": [],
            **fields,
        }
        return Manifest(model=model, version=version, run_id=run_id, files=files, **values)

    return manifest
