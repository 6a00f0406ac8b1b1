"""One ModelCatalog contract, proven against the local directory (embedded mode) and the
Vertex AI adapter (here on the local control plane's Vertex AI API, in the cloud on
Google's): an upload becomes a version of the model named like it (the first creates
the model), uploading it again adds nothing, a version carrying the number with other
contents is refused and nothing is added, and an alias names one version at a time.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from modelrail.adapters.google.vertex_models import VertexModels
from modelrail.adapters.local.models import LocalModels
from modelrail.domain.catalog import Catalog
from modelrail.kernel.errors import IntegrityError
from modelrail.kernel.ports import ModelUpload
from modelrail.settings.service import vertex_container
from tests.integration.emulator_support import control_plane_with_apis

PROJECT, REGION, IMAGE = "modelrail-contract", "europe-west1", "staging:abc"
BUCKET = "artifacts"


def _upload(version: int, manifest: bytes = b"{}", model: str = "penguins") -> ModelUpload:
    return ModelUpload(
        model=model,
        version=version,
        manifest_sha256=hashlib.sha256(manifest + str(version).encode()).hexdigest(),
        artifact_uri=f"gs://{BUCKET}/models/{model}/versions/{version}/",
        artifact_bucket=BUCKET,
    )


@pytest.fixture(params=["local-directory", "vertex-ai"])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Catalog]:
    if request.param == "local-directory":
        yield Catalog(LocalModels(tmp_path / "vertex-ai", PROJECT, REGION), IMAGE)
        return
    with control_plane_with_apis(tmp_path, PROJECT, REGION, "models") as (_, endpoint):
        yield Catalog(VertexModels(PROJECT, REGION, endpoint), IMAGE)


def _versions(catalog: Catalog, model: str = "penguins") -> list[dict[str, Any]]:
    return catalog.models.versions(model)


def test_the_first_upload_creates_the_model_with_its_version(catalog: Catalog) -> None:
    upload = _upload(1)

    uploaded = catalog.upload(upload)

    assert uploaded.model == f"projects/{PROJECT}/locations/{REGION}/models/penguins"
    assert (uploaded.version_id, uploaded.version) == ("1", 1)
    assert uploaded.aliases == ("default",)  # as Vertex AI gives a model's first version
    [resource] = _versions(catalog)
    assert resource["displayName"] == "penguins"
    assert resource["artifactUri"] == upload.artifact_uri
    assert resource["containerSpec"] == vertex_container(IMAGE, "penguins", 1, BUCKET)
    assert resource["labels"] == {
        "modelrail_version": "1",
        "modelrail_manifest": upload.manifest_sha256[:32],
    }
    assert catalog.find("penguins", 1) == uploaded


def test_later_versions_are_versions_of_the_same_model(catalog: Catalog) -> None:
    catalog.upload(_upload(1))

    second = catalog.upload(_upload(2))
    other = catalog.upload(_upload(1, model="housing"))

    assert (second.version_id, second.version) == ("2", 2)
    assert second.model.endswith("/models/penguins")
    assert other.model.endswith("/models/housing")
    assert [r["labels"]["modelrail_version"] for r in _versions(catalog)] == ["1", "2"]


def test_nothing_is_found_for_what_was_never_uploaded(catalog: Catalog) -> None:
    catalog.upload(_upload(1))

    assert catalog.find("penguins", 2) is None
    assert catalog.find("housing", 1) is None


def test_uploading_the_same_version_again_adds_nothing(catalog: Catalog) -> None:
    first = catalog.upload(_upload(1))

    again = catalog.upload(_upload(1))

    assert again == first
    assert len(_versions(catalog)) == 1


@pytest.mark.parametrize(
    "conflicting",
    [
        pytest.param(_upload(1, manifest=b"another manifest"), id="other-manifest"),
        pytest.param(
            replace(_upload(1), artifact_uri="gs://elsewhere/models/penguins/versions/1/"),
            id="other-folder",
        ),
    ],
)
def test_another_version_under_the_same_number_is_refused(
    catalog: Catalog, conflicting: ModelUpload
) -> None:
    catalog.upload(_upload(1))

    with pytest.raises(IntegrityError, match="already in the model catalog with another"):
        catalog.upload(conflicting)

    assert len(_versions(catalog)) == 1


def test_an_alias_names_one_version_and_moves_when_set_on_another(catalog: Catalog) -> None:
    for version in (1, 2, 3):
        catalog.upload(_upload(version))

    staging = catalog.set_alias("penguins", "staging", 3)
    moved = catalog.set_alias("penguins", "staging", 1)
    catalog.set_alias("penguins", "champion", 3)

    assert staging is not None
    assert staging.aliases == ("staging",)
    assert moved is not None
    assert (moved.version, moved.aliases) == (1, ("default", "staging"))
    held = {r["labels"]["modelrail_version"]: r["versionAliases"] for r in _versions(catalog)}
    assert held == {"1": ["default", "staging"], "2": [], "3": ["champion"]}


def test_an_alias_set_on_a_version_never_uploaded_leaves_the_version_holding_it(
    catalog: Catalog,
) -> None:
    catalog.upload(_upload(2))
    catalog.set_alias("penguins", "staging", 2)

    assert catalog.set_alias("penguins", "staging", 1) is None  # v1 came before the catalog

    [resource] = _versions(catalog)
    assert resource["versionAliases"] == ["default"]


def test_concurrent_uploads_of_one_version_agree_on_it(catalog: Catalog) -> None:
    results: list[Any] = []

    def upload() -> None:
        try:
            results.append(catalog.upload(_upload(1)))
        except BaseException as exc:  # collected for the assertion below
            results.append(exc)

    threads = [threading.Thread(target=upload) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Racing uploads may each add a version (look, then upload, as on Vertex AI); all
    # carry the same labels, and every caller is answered with the same, earliest one.
    assert len({repr(result) for result in results}) == 1, results
    assert results[0].version_id == "1"
