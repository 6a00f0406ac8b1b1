"""With ``[vertex] model_registry`` on, the register stage uploads each version through
the unchanged Vertex AI adapter, here to the local control plane's Vertex AI API
(emulator mode's endpoint), served in this process so its request log shows every
call; deploy and rollback move its aliases.

The rest of the pipeline is the real one on fakes (in-memory buckets, the in-process
bus, a fake deployer), so these tests need neither the Pub/Sub emulator nor the
training job's process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import urllib3

from modelrail.adapters.by_mode import open_catalog
from modelrail.adapters.google.vertex_models import VertexModels
from modelrail.composition.bootstrap import bootstrap
from modelrail.domain.catalog import Catalog
from modelrail.kernel.errors import ConfigError
from modelrail.kernel.events import ModelEvaluated
from modelrail.kernel.ports import ModelUpload
from modelrail.localcloud.control_plane import ControlPlane
from modelrail.service.container import Container
from modelrail.service.rollback import rollback
from modelrail.service.stages import register
from modelrail.settings.process import Settings
from tests.conftest import REPO, installed, settings_env, vertex_config
from tests.fakes import FakeDeployer, InMemoryStorage
from tests.integration.emulator_support import control_plane_with_apis
from tests.unit.conftest import Harness

UPLOAD = "/models:upload"
IMAGE = "europe-west1-docker.pkg.dev/p/modelrail/staging:test"


@dataclass
class Pipeline:
    harness: Harness
    plane: ControlPlane
    endpoint: str
    catalog: Catalog

    @property
    def container(self) -> Container:
        return self.harness.container

    @property
    def model(self) -> str:
        return self.container.config.model_name

    def uploads(self) -> int:
        return sum(path.endswith(UPLOAD) for method, path in self.plane.requests)

    def listed(self) -> list[dict[str, Any]]:
        """The model's versions, read with a plain REST call."""
        name = f"projects/{self.container.settings.project}/locations/"
        name += f"{self.container.settings.region}/models/{self.model}"
        response = urllib3.request("GET", f"{self.endpoint}/v1/{name}:listVersions", timeout=10)
        assert response.status == 200, response.data
        versions: list[dict[str, Any]] = orjson.loads(response.data)["models"]
        return versions

    def aliases(self) -> dict[str, list[str]]:
        return {v["labels"]["modelrail_version"]: v["versionAliases"] for v in self.listed()}


def _pipeline(tmp_path: Path, *, vertex: bool, catalog_built: list[Catalog]) -> Iterator[Pipeline]:
    home = tmp_path / "home"
    config = vertex_config(tmp_path / "config") if vertex else REPO / "pipeline.toml"
    settings = Settings.from_env(settings_env(home))
    storage = InMemoryStorage(settings.data_bucket, settings.artifact_bucket)
    deployer = FakeDeployer()
    with control_plane_with_apis(
        home / "stack", settings.project, settings.region, settings.artifact_repository
    ) as (plane, endpoint):
        catalog = Catalog(VertexModels(settings.project, settings.region, endpoint), IMAGE)

        def build_catalog() -> Catalog:
            catalog_built.append(catalog)
            return catalog

        container = installed(
            bootstrap(
                settings,
                storage_factory=lambda: storage,
                deployer_factory=lambda _model: deployer,
                catalog_factory=build_catalog,
            ),
            config,
        )
        yield Pipeline(Harness(container, storage, deployer), plane, endpoint, catalog)


@pytest.fixture
def pipeline(tmp_path: Path) -> Iterator[Pipeline]:
    yield from _pipeline(tmp_path, vertex=True, catalog_built=[])


def test_a_run_registers_v1_in_vertex_and_mirrors_its_aliases(
    pipeline: Pipeline, penguins_csv: bytes
) -> None:
    pipeline.harness.upload(penguins_csv)
    pipeline.harness.run()

    registry, model = pipeline.container.registry, pipeline.model
    assert registry.versions(model) == [1]
    [listed] = pipeline.listed()
    assert listed["versionId"] == "1"
    assert listed["labels"]["modelrail_version"] == "1"
    assert listed["artifactUri"] == registry.summaries(model)[0]["location"]
    spec = listed["containerSpec"]
    assert (spec["imageUri"], spec["predictRoute"], spec["healthRoute"]) == (
        IMAGE,
        "/predict",
        "/readyz",
    )
    assert {"name": "MODELRAIL_MODEL_VERSION", "value": "1"} in spec["env"]
    # Where it went: beside the version in the bucket, and in the stage record.
    publication = registry.publication(model, 1)
    assert publication is not None
    assert publication.vertex == {"model": listed["name"], "version_id": "1"}
    [run] = pipeline.container.runs.runs()
    assert publication is not None
    assert run.stages["register"].output["published"] == publication.to_json()
    assert run.outcome == "deployed"
    assert sorted(listed["versionAliases"]) == ["champion", "default", "staging"]


def test_a_redelivered_register_event_uploads_nothing_new(
    pipeline: Pipeline, penguins_csv: bytes
) -> None:
    pipeline.harness.upload(penguins_csv)
    pipeline.harness.run()
    assert pipeline.uploads() == 1
    [evaluated] = pipeline.harness.published("model-evaluated")

    # The same delivery again: the stage's record answers it.
    pipeline.harness.bus.publish("model-evaluated", orjson.dumps(evaluated), {})
    pipeline.harness.run()
    # A delivery whose predecessor died after uploading, before recording: the handler
    # runs again and finds v1 in Vertex AI.
    container = pipeline.container
    outcome = register.handle(
        ModelEvaluated.from_body(evaluated),
        config=container.config,
        runs=container.runs,
        registry=container.registry,
        leases=container.leases,
        delivery_attempt=2,
    )

    assert outcome.output["published"]["vertex"]["version_id"] == "1"
    assert pipeline.uploads() == 1
    assert len(pipeline.listed()) == 1


def test_aliases_move_with_deploy_and_rollback(pipeline: Pipeline, penguins_csv: bytes) -> None:
    pipeline.harness.upload(penguins_csv)
    pipeline.harness.run()
    pipeline.harness.retrain("second")
    pipeline.harness.run()
    assert pipeline.container.registry.aliases(pipeline.model) == {"champion": 2, "staging": 2}
    assert pipeline.aliases() == {"1": ["default"], "2": ["champion", "staging"]}

    rollback(pipeline.container, reason="v2 misroutes", requested_by="test")

    assert pipeline.container.registry.aliases(pipeline.model) == {"champion": 2, "staging": 1}
    assert pipeline.aliases() == {"1": ["default", "staging"], "2": ["champion"]}


def test_another_v1_already_in_vertex_is_refused(pipeline: Pipeline, penguins_csv: bytes) -> None:
    model = pipeline.model
    elsewhere = ModelUpload(model, 1, "0" * 64, "gs://elsewhere/models/penguins/versions/1/", "x")
    pipeline.catalog.upload(elsewhere)

    pipeline.harness.upload(penguins_csv)
    pipeline.harness.run()

    [failed] = pipeline.harness.published("pipeline-failed")
    assert (failed["stage"], failed["error"]["kind"]) == ("register", "integrity_error")
    assert pipeline.harness.published("model-registered") == []
    assert [v["artifactUri"] for v in pipeline.listed()] == [elsewhere.artifact_uri]
    assert pipeline.container.registry.publication(model, 1) is None
    assert pipeline.container.registry.alias(model, "champion") is None


def test_with_the_switch_off_no_catalog_is_built_or_called(
    tmp_path: Path, penguins_csv: bytes
) -> None:
    built: list[Catalog] = []
    for pipeline in _pipeline(tmp_path, vertex=False, catalog_built=built):
        pipeline.harness.upload(penguins_csv)
        pipeline.harness.run()

        [run] = pipeline.container.runs.runs()
        assert run.outcome == "deployed"
        assert "vertex" not in run.stages["register"].output["published"]
        assert built == []
        assert not any("/models" in path for _, path in pipeline.plane.requests)


def test_a_cloud_deployment_without_vertex_says_how_to_provide_it(settings: Settings) -> None:
    cloud = dataclasses.replace(settings, mode="cloud", staging_image=None)

    with pytest.raises(ConfigError, match=r"set vertex_model_registry = true in terraform\.tfvars"):
        open_catalog(cloud)
