"""The register stage publishes each version through the unchanged Artifact Registry
adapter, here to the local control plane's Artifact Registry API (emulator mode's
endpoint), served in this process so its request log shows every call.

The rest of the pipeline is the real one on fakes (in-memory buckets, the in-process
bus, a fake deployer), so these tests need neither the Pub/Sub emulator nor the
training job's process.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import urllib3

from modelrail.adapters.google.artifact_registry import ArtifactRegistryPackages
from modelrail.composition.bootstrap import bootstrap
from modelrail.domain.registry import MANIFEST, SIGNATURE, sha256
from modelrail.kernel.events import ModelEvaluated
from modelrail.kernel.ports import Message
from modelrail.localcloud.control_plane import ControlPlane
from modelrail.service.container import Container
from modelrail.service.stages import register
from modelrail.settings.process import Settings
from tests.conftest import installed
from tests.fakes import FakeDeployer, InMemoryStorage
from tests.integration.emulator_support import control_plane_with_apis
from tests.unit.conftest import Harness

UPLOAD = "/genericArtifacts:create"


@dataclass
class Pipeline:
    harness: Harness
    plane: ControlPlane
    endpoint: str
    packages: ArtifactRegistryPackages

    @property
    def container(self) -> Container:
        return self.harness.container

    def upload(self, data: bytes) -> None:
        self.harness.upload(data)
        self.harness.run()

    def published(self, topic: str) -> list[Message]:
        return [message for t, message in self.harness.bus.history if t == topic]

    def uploads(self) -> int:
        return sum(path.endswith(UPLOAD) for method, path in self.plane.requests)


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[Pipeline]:
    storage = InMemoryStorage(settings.data_bucket, settings.artifact_bucket)
    deployer = FakeDeployer()
    with control_plane_with_apis(
        settings.home / "stack", settings.project, settings.region, settings.artifact_repository
    ) as (plane, endpoint):
        packages = ArtifactRegistryPackages(
            settings.project, settings.region, settings.artifact_repository, endpoint
        )
        container = installed(
            bootstrap(
                settings,
                storage_factory=lambda: storage,
                deployer_factory=lambda _model: deployer,
                packages_factory=lambda: packages,
            )
        )
        yield Pipeline(Harness(container, storage, deployer), plane, endpoint, packages)


def _rest(url: str) -> Any:
    response = urllib3.request("GET", url, timeout=10.0)
    assert response.status == 200, response.data
    return orjson.loads(response.data)


def test_register_publishes_v1_and_the_local_endpoint_lists_it(
    pipeline: Pipeline, penguins_csv: bytes
) -> None:
    pipeline.upload(penguins_csv)

    registry, model = pipeline.container.registry, pipeline.container.config.model_name
    assert registry.versions(model) == [1]
    repository = pipeline.packages.repository
    listed = _rest(f"{pipeline.endpoint}/v1/{repository}/packages/{model}/versions")
    assert [v["name"] for v in listed["versions"]] == [f"{repository}/packages/{model}/versions/v1"]
    # The repository holds exactly the version's files, byte for byte: the manifest and
    # every file it lists.
    manifest_bytes = registry.store.read(f"models/{model}/versions/1/{MANIFEST}").data
    manifest = orjson.loads(manifest_bytes)
    expected = {name: entry["sha256"] for name, entry in manifest["files"].items()}
    expected[MANIFEST] = sha256(manifest_bytes)
    # ... and its signature, so the published copy can be verified as the bucket's is.
    expected[SIGNATURE] = sha256(registry.store.read(f"models/{model}/versions/1/{SIGNATURE}").data)
    assert pipeline.packages.files(model, "v1") == expected
    assert pipeline.uploads() == len(expected)
    # Where it was published: beside the version in the bucket, and in the stage record.
    publication = registry.publication(model, 1)
    assert publication is not None
    assert publication.to_json() == {
        "uri": f"{pipeline.endpoint}/v1/{repository}/packages/{model}/versions/v1",
        "package": model,
        "version": "v1",
        "files": dict(sorted(expected.items())),
    }
    [run] = pipeline.container.runs.runs()
    assert publication is not None
    assert run.stages["register"].output["published"] == publication.to_json()
    assert run.outcome == "deployed"


def test_a_redelivered_register_event_publishes_nothing_new(
    pipeline: Pipeline, penguins_csv: bytes
) -> None:
    pipeline.upload(penguins_csv)
    uploads = pipeline.uploads()
    [evaluated] = pipeline.published("model-evaluated")

    # The same delivery again: the stage's record answers it.
    pipeline.harness.bus.publish("model-evaluated", evaluated.data, dict(evaluated.attributes))
    pipeline.harness.run()
    # A delivery whose predecessor died after publishing, before recording: the handler
    # itself runs again, finds v1 published with the same bytes, and uploads nothing.
    event = ModelEvaluated.from_body(orjson.loads(evaluated.data))
    container = pipeline.container
    outcome = register.handle(
        event,
        config=container.config,
        runs=container.runs,
        registry=container.registry,
        leases=container.leases,
        delivery_attempt=2,
    )

    assert outcome.output["version"] == 1
    assert pipeline.uploads() == uploads
    assert pipeline.packages.versions(container.config.model_name) == ["v1"]
    assert len(pipeline.published("model-registered")) == 2  # re-published, same event
    assert (
        len({orjson.loads(m.data)["event_id"] for m in pipeline.published("model-registered")}) == 1
    )


def test_a_different_version_already_in_the_repository_is_refused(
    pipeline: Pipeline, penguins_csv: bytes
) -> None:
    model = pipeline.container.config.model_name
    pipeline.packages.publish(model, "v1", {"model.txt": b"a model from elsewhere"})

    pipeline.upload(penguins_csv)

    [failed] = [orjson.loads(m.data) for m in pipeline.published("pipeline-failed")]
    assert (failed["stage"], failed["error"]["kind"]) == ("register", "integrity_error")
    assert pipeline.published("model-registered") == []
    assert pipeline.packages.files(model, "v1") == {"model.txt": sha256(b"a model from elsewhere")}
    assert pipeline.container.registry.publication(model, 1) is None
    assert pipeline.container.registry.alias(model, "champion") is None
