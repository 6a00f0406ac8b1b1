"""A registered version as a Vertex AI model version: ``Catalog``, the one
``ModelCatalog``, over the models of Vertex AI's API (``adapters.vertex_models``) or of
a local directory (``adapters.local.models``), which only store what they are sent.

The version's own files stay in the artifact bucket: ``artifactUri`` is its folder there,
and the serving container is the staging image pinned to it (``vertex_container``). Two
labels say which modelrail version a catalog version is: ``modelrail_version`` (the
number) and ``modelrail_manifest`` (the manifest's sha256, its first 32 hex digits: a
label value holds at most 63 characters). A registration delivered again finds its
version by them and uploads nothing; a version carrying the number with another
manifest or another folder is somebody else's, and refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from modelrail.kernel.errors import IntegrityError, TransientError
from modelrail.kernel.ports import CatalogVersion, ModelUpload
from modelrail.settings.service import vertex_container

VERSION_LABEL = "modelrail_version"
MANIFEST_LABEL = "modelrail_manifest"
# Vertex AI's version aliases: at most 128 characters, not a number.
ALIAS = re.compile(r"^[a-z][a-zA-Z0-9-]{0,126}[a-z0-9-]$")


def model_resource(upload: ModelUpload, image: str) -> dict[str, Any]:
    """The ``Model`` a ``models:upload`` request carries for ``upload``."""
    return {
        "displayName": upload.model,
        "versionDescription": (
            f"modelrail {upload.model} v{upload.version}, manifest sha256 {upload.manifest_sha256}"
        ),
        "artifactUri": upload.artifact_uri,
        "containerSpec": vertex_container(
            image, upload.model, upload.version, upload.artifact_bucket
        ),
        "labels": {
            VERSION_LABEL: str(upload.version),
            MANIFEST_LABEL: upload.manifest_sha256[:32],
        },
    }


def version_filter(version: int) -> str:
    """The ``listVersions`` filter for the versions carrying modelrail ``version``."""
    return f'labels.{VERSION_LABEL}="{version}"'


def carries(resource: Mapping[str, Any], version: int) -> bool:
    return bool(resource.get("labels", {}).get(VERSION_LABEL) == str(version))


def catalog_version(resource: Mapping[str, Any]) -> CatalogVersion:
    """A listed ``Model`` (one version of it) as the port returns it."""
    return CatalogVersion(
        model=str(resource["name"]).partition("@")[0],
        version_id=str(resource["versionId"]),
        version=int(resource["labels"][VERSION_LABEL]),
        aliases=tuple(sorted(resource.get("versionAliases", []))),
    )


def earliest(resources: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The first-made of several versions (two uploads of one registration that raced
    both made one); None for none."""
    return min(resources, key=lambda r: int(r["versionId"]), default=None)


def uploaded(upload: ModelUpload, versions: Iterable[Mapping[str, Any]]) -> CatalogVersion | None:
    """The version among ``versions`` that already is ``upload``; None if none carries
    its number. Every catalog decides with this before it uploads: a version carrying
    the number with another manifest or another folder is ``IntegrityError``."""
    carrying = [resource for resource in versions if carries(resource, upload.version)]
    others = sorted(
        str(resource["versionId"])
        for resource in carrying
        if resource["labels"].get(MANIFEST_LABEL) != upload.manifest_sha256[:32]
        or resource.get("artifactUri") != upload.artifact_uri
    )
    if others:
        raise IntegrityError(
            f"{upload.model} v{upload.version} is already in the model catalog with another "
            f"manifest or other files (catalog version {', '.join(others)}); "
            "a registered version never changes",
            {"model": upload.model, "version": upload.version, "catalog_versions": others},
        )
    found = earliest(carrying)
    return None if found is None else catalog_version(found)


class Models(Protocol):
    """Vertex AI's models, as its API changes them: what ``Catalog`` is built on."""

    def exists(self, model_id: str) -> bool:
        """Whether the model has been created (by its first version)."""
        ...

    def versions(self, model_id: str, version: int | None = None) -> list[dict[str, Any]]:
        """The model's versions (``Model`` resources), those carrying modelrail
        ``version`` if given; empty for no such model."""
        ...

    def create(self, model_id: str, resource: Mapping[str, Any], *, new_model: bool) -> object:
        """Upload ``resource`` as the model's first version (``new_model``:
        ``FileExistsError`` if the model exists) or as a new version of it; return once
        it is stored."""
        ...

    def merge_aliases(
        self, model_id: str, version_id: str, aliases: Sequence[str]
    ) -> dict[str, Any]:
        """Add (``name``) or remove (``-name``) aliases of one version; an added alias
        leaves the version that had it. Returns the version."""
        ...


class Catalog:
    """``ModelCatalog`` over ``models``: each upload a version serving ``image``.

    It looks, then uploads: two racing uploads of one registration (a redelivery while
    the first still runs) may both add a version. Both carry the same labels and
    folder, and the earliest is the one returned and aliased.
    """

    def __init__(self, models: Models, image: str) -> None:
        self.models = models
        self.image = image

    def upload(self, upload: ModelUpload) -> CatalogVersion:
        found = uploaded(upload, self.models.versions(upload.model, upload.version))
        if found is not None:
            return found
        resource = model_resource(upload, self.image)
        try:
            self.models.create(
                upload.model, resource, new_model=not self.models.exists(upload.model)
            )
        except FileExistsError:  # another registration created the model meanwhile
            self.models.create(upload.model, resource, new_model=False)
        found = uploaded(upload, self.models.versions(upload.model, upload.version))
        if found is None:
            raise TransientError(
                f"{upload.model} v{upload.version} was uploaded but is not listed yet"
            )
        return found

    def find(self, model: str, version: int) -> CatalogVersion | None:
        found = earliest(self.models.versions(model, version))
        return None if found is None else catalog_version(found)

    def set_alias(self, model: str, alias: str, version: int) -> CatalogVersion | None:
        target = self.find(model, version)
        if target is not None:
            if alias in target.aliases:
                return target
            return catalog_version(self.models.merge_aliases(model, target.version_id, [alias]))
        for holder in self.models.versions(model):
            if alias in holder.get("versionAliases", []):
                self.models.merge_aliases(model, str(holder["versionId"]), [f"-{alias}"])
        return None
