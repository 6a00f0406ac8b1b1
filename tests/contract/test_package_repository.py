"""One PackageRepository contract, proven against every implementation.

The local directory (embedded mode) and the Artifact Registry adapter (here on the
local control plane's Artifact Registry API, in the cloud on Google's) must agree:
a published version is listed with its files' sha256, publishing it again is a
success that writes nothing, a version stopped half-way is completed, and a version
holding other bytes or other files is refused and left as it was.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrail.adapters.google.artifact_registry import ArtifactRegistryPackages
from modelrail.adapters.local.packages import LocalPackageRepository
from modelrail.kernel.errors import IntegrityError
from modelrail.kernel.ports import PackageRepository
from tests.integration.emulator_support import control_plane_with_apis

PROJECT, REGION, REPOSITORY = "modelrail-contract", "europe-west1", "models"
FILES = {"model.txt": b"tree\n" * 100, "manifest.json": b'{"version": 1}', "card.html": b"<p>"}


def _digests(files: dict[str, bytes]) -> dict[str, str]:
    return {name: hashlib.sha256(data).hexdigest() for name, data in files.items()}


@pytest.fixture(params=["local-directory", "artifact-registry"])
def packages(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PackageRepository]:
    if request.param == "local-directory":
        yield LocalPackageRepository(tmp_path / "packages")
        return
    with control_plane_with_apis(tmp_path, PROJECT, REGION, REPOSITORY) as (_, endpoint):
        yield ArtifactRegistryPackages(PROJECT, REGION, REPOSITORY, endpoint)


def test_a_published_version_is_listed_with_its_files(packages: PackageRepository) -> None:
    published = packages.publish("penguins", "v1", FILES)

    assert (published.package, published.version) == ("penguins", "v1")
    assert dict(published.files) == _digests(FILES)
    assert published.uri
    assert packages.versions("penguins") == ["v1"]
    assert packages.files("penguins", "v1") == _digests(FILES)


def test_nothing_is_listed_for_what_was_never_published(packages: PackageRepository) -> None:
    packages.publish("penguins", "v1", FILES)

    assert packages.versions("other") == []
    assert packages.files("penguins", "v2") == {}
    assert packages.files("other", "v1") == {}


def test_publishing_the_same_version_again_succeeds(packages: PackageRepository) -> None:
    first = packages.publish("penguins", "v1", FILES)

    again = packages.publish("penguins", "v1", dict(FILES))

    assert again == first
    assert packages.versions("penguins") == ["v1"]


def test_a_version_stopped_half_way_is_completed(packages: PackageRepository) -> None:
    packages.publish("penguins", "v1", {"model.txt": FILES["model.txt"]})

    published = packages.publish("penguins", "v1", FILES)

    assert dict(published.files) == _digests(FILES)


@pytest.mark.parametrize(
    "conflicting",
    [
        pytest.param({**FILES, "model.txt": b"another model"}, id="other-bytes"),
        pytest.param({"model.txt": FILES["model.txt"]}, id="fewer-files"),
    ],
)
def test_a_different_version_under_the_same_number_is_refused(
    packages: PackageRepository, conflicting: dict[str, bytes]
) -> None:
    packages.publish("penguins", "v1", FILES)

    with pytest.raises(IntegrityError, match="already published with other contents"):
        packages.publish("penguins", "v1", conflicting)

    assert packages.files("penguins", "v1") == _digests(FILES)


def test_a_refused_version_writes_nothing(packages: PackageRepository) -> None:
    packages.publish("penguins", "v1", {"model.txt": FILES["model.txt"]})

    with pytest.raises(IntegrityError):
        packages.publish("penguins", "v1", {"model.txt": b"another", "card.html": b"<p>"})

    assert set(packages.files("penguins", "v1")) == {"model.txt"}


def test_versions_and_packages_are_independent(packages: PackageRepository) -> None:
    packages.publish("penguins", "v1", FILES)
    packages.publish("penguins", "v2", {"model.txt": b"second"})
    packages.publish("housing", "v1", {"model.txt": b"other model"})

    assert packages.versions("penguins") == ["v1", "v2"]
    assert packages.files("penguins", "v2") == _digests({"model.txt": b"second"})
    assert packages.files("housing", "v1") == _digests({"model.txt": b"other model"})


def test_concurrent_publications_of_one_version_all_succeed(
    packages: PackageRepository,
) -> None:
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            packages.publish("penguins", "v1", FILES)
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert packages.files("penguins", "v1") == _digests(FILES)
