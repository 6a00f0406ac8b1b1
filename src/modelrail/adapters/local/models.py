"""Vertex AI models as a local directory (embedded mode's ``ModelCatalog``, through
``catalog.Catalog``): ``<root>/<model id>/versions/<version id>.json`` holds each
version's ``Model`` resource, ``aliases.json`` which version each alias names.

Version ids count up from 1 per model; the first version creates the model and gets
the ``default`` alias, as in Vertex AI; an alias names one version at a time, so
merging it onto a version takes it off the one holding it. Every change happens under
an exclusive ``flock`` of the model's directory. The emulated Vertex AI API of the
local control plane (``modelrail.localcloud.vertex_ai``) keeps its models here too.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from modelrail.domain.catalog import ALIAS, carries
from modelrail.kernel.canonical import canonical_json

DEFAULT_ALIAS = "default"


class LocalModels:
    """Vertex AI models of one project and location under ``root``."""

    def __init__(self, root: Path, project: str, location: str) -> None:
        self.root = root
        self.parent = f"projects/{project}/locations/{location}"

    def exists(self, model_id: str) -> bool:
        return (self.root / model_id / "versions").is_dir()

    def create(
        self, model_id: str, resource: Mapping[str, Any], *, new_model: bool
    ) -> dict[str, Any]:
        """Add a version: the model's first (``new_model``: ``FileExistsError`` if the
        model exists) or a later one (``FileNotFoundError`` if it does not)."""
        with self._locked(model_id):
            exists = self.exists(model_id)
            if new_model and exists:
                raise FileExistsError(f"{self.parent}/models/{model_id} already exists")
            if not new_model and not exists:
                raise FileNotFoundError(f"{self.parent}/models/{model_id} not found")
            return self._create(model_id, resource)

    def versions(self, model_id: str, version: int | None = None) -> list[dict[str, Any]]:
        """The model's versions (those carrying modelrail ``version``, if given), oldest
        first; empty for no such model."""
        with self._locked(model_id):
            found = self._versions(model_id)
        return found if version is None else [r for r in found if carries(r, version)]

    def merge_aliases(
        self, model_id: str, version_id: str, aliases: Sequence[str]
    ) -> dict[str, Any]:
        """Add (``name``) or remove (``-name``) aliases of one version; an added alias
        leaves the version that had it. ``FileNotFoundError`` for no such version,
        ``ValueError`` for an invalid alias or taking ``default`` off."""
        with self._locked(model_id):
            return self._merge(model_id, version_id, aliases)

    # -- unlocked parts ----------------------------------------------------------
    def _create(self, model_id: str, resource: Mapping[str, Any]) -> dict[str, Any]:
        directory = self.root / model_id / "versions"
        directory.mkdir(parents=True, exist_ok=True)
        version_id = 1 + max((int(p.stem) for p in directory.glob("*.json")), default=0)
        stored = {
            **resource,
            "name": f"{self.parent}/models/{model_id}",
            "versionId": str(version_id),
        }
        _write(directory / f"{version_id}.json", canonical_json(stored))
        if version_id == 1:
            self._save_aliases(model_id, {DEFAULT_ALIAS: "1"})
        return self._with_aliases(stored, self._aliases(model_id))

    def _versions(self, model_id: str) -> list[dict[str, Any]]:
        directory = self.root / model_id / "versions"
        if not directory.is_dir():
            return []
        aliases = self._aliases(model_id)
        stored = [orjson.loads(path.read_bytes()) for path in directory.glob("*.json")]
        return sorted(
            (self._with_aliases(resource, aliases) for resource in stored),
            key=lambda resource: int(resource["versionId"]),
        )

    def _merge(self, model_id: str, version_id: str, aliases: Sequence[str]) -> dict[str, Any]:
        path = self.root / model_id / "versions" / f"{version_id}.json"
        if not version_id.isdigit() or not path.is_file():
            raise FileNotFoundError(f"{self.parent}/models/{model_id}@{version_id} not found")
        current = self._aliases(model_id)
        for alias in aliases:
            name = alias.removeprefix("-")
            if not ALIAS.match(name):
                raise ValueError(f"invalid version alias {name!r}")
            if alias.startswith("-"):
                if name == DEFAULT_ALIAS:
                    raise ValueError("the default alias cannot be removed, only moved")
                if current.get(name) == version_id:
                    del current[name]
            else:
                current[name] = version_id
        self._save_aliases(model_id, current)
        return self._with_aliases(orjson.loads(path.read_bytes()), current)

    def _aliases(self, model_id: str) -> dict[str, str]:
        path = self.root / model_id / "aliases.json"
        return orjson.loads(path.read_bytes()) if path.is_file() else {}

    def _save_aliases(self, model_id: str, aliases: Mapping[str, str]) -> None:
        _write(self.root / model_id / "aliases.json", canonical_json(dict(aliases)))

    @staticmethod
    def _with_aliases(resource: Mapping[str, Any], aliases: Mapping[str, str]) -> dict[str, Any]:
        held = sorted(name for name, held_by in aliases.items() if held_by == resource["versionId"])
        return {**resource, "versionAliases": held}

    @contextlib.contextmanager
    def _locked(self, model_id: str) -> Iterator[None]:
        directory = self.root / model_id
        directory.mkdir(parents=True, exist_ok=True)
        with open(directory / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def _write(path: Path, data: bytes) -> None:
    """Replace ``path`` whole: a reader sees the old bytes or the new ones."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
