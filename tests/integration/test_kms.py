"""The register stage signs manifests, and the staging service verifies them, through
the unchanged Cloud KMS adapter, here on the local control plane's Cloud KMS API
(emulator mode's endpoint), served in this process so its request log shows every call.

The rest of the pipeline is the real one on fakes (in-memory buckets, the in-process
bus, a fake deployer), so these tests need neither the Pub/Sub emulator nor the
training job's process.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pytest

from modelrail.adapters.google.kms import CloudKmsSigner
from modelrail.composition.bootstrap import bootstrap
from modelrail.domain.registry import MANIFEST, SIGNATURE, sha256
from modelrail.kernel.events import ModelEvaluated
from modelrail.localcloud.control_plane import ControlPlane
from modelrail.localcloud.kms import default_key
from modelrail.service.container import Container
from modelrail.service.stages import register
from modelrail.serving.app import StagingService, create_app
from modelrail.settings.process import Settings
from tests.conftest import installed
from tests.fakes import FakeDeployer, InMemoryStorage
from tests.integration.emulator_support import control_plane_with_apis
from tests.unit.conftest import Harness

SIGN = ":asymmetricSign"
PUBLIC_KEY = "/publicKey"


@dataclass
class Pipeline:
    harness: Harness
    plane: ControlPlane
    endpoint: str
    key: str

    @property
    def container(self) -> Container:
        return self.harness.container

    def calls(self, suffix: str) -> int:
        return sum(path.endswith(suffix) for _, path in self.plane.requests)

    def service(self, version: int) -> StagingService:
        """The staging service as it starts in the cloud: its own adapter, on the key."""
        return create_app(
            {
                "store": self.container.artifacts,
                "signer": CloudKmsSigner(self.key, self.endpoint),
                "model_name": self.container.config.model_name,
                "model_version": version,
            }
        )


@pytest.fixture
def pipeline(settings: Settings) -> Iterator[Pipeline]:
    storage = InMemoryStorage(settings.data_bucket, settings.artifact_bucket)
    deployer = FakeDeployer()
    key = default_key(settings.project, settings.region)
    with control_plane_with_apis(
        settings.home / "stack",
        settings.project,
        settings.region,
        settings.artifact_repository,
        keys=(key, key.replace("cryptoKeyVersions/1", "cryptoKeyVersions/2")),
    ) as (plane, endpoint):
        container = installed(
            bootstrap(
                settings,
                storage_factory=lambda: storage,
                deployer_factory=lambda _model: deployer,
                signer_factory=lambda: CloudKmsSigner(key, endpoint),
            )
        )
        yield Pipeline(Harness(container, storage, deployer), plane, endpoint, key)


def test_register_signs_through_cloud_kms_and_staging_verifies_through_it(
    pipeline: Pipeline, penguins_csv: bytes
) -> None:
    pipeline.harness.upload(penguins_csv)
    pipeline.harness.run()

    model = pipeline.container.config.model_name
    store = pipeline.container.artifacts
    manifest = store.read(f"models/{model}/versions/1/{MANIFEST}").data
    signature = orjson.loads(store.read(f"models/{model}/versions/1/{SIGNATURE}").data)
    assert (signature["key"], signature["manifest_sha256"]) == (pipeline.key, sha256(manifest))
    assert pipeline.calls(SIGN) == 1
    assert pipeline.calls(PUBLIC_KEY) >= 1  # the deploy stage verified before its rollout
    before = pipeline.calls(PUBLIC_KEY)
    service = pipeline.service(1)
    assert service.state.ready
    assert pipeline.calls(PUBLIC_KEY) == before + 1  # and the service, through Cloud KMS


@pytest.mark.fault
def test_a_manifest_rewritten_in_the_bucket_is_refused_by_the_staging_service(
    pipeline: Pipeline, penguins_csv: bytes
) -> None:
    pipeline.harness.upload(penguins_csv)
    pipeline.harness.run()
    model = pipeline.container.config.model_name
    store = pipeline.container.artifacts
    prefix = f"models/{model}/versions/1/"
    # A model of one's own, and the manifest's sha256 and size rewritten to match.
    evil = store.read(prefix + "model.txt").data.replace(b"leaf_value=", b"leaf_value=9", 1)
    manifest = orjson.loads(store.read(prefix + MANIFEST).data)
    manifest["files"]["model.txt"] = {"sha256": sha256(evil), "size": len(evil)}
    store.write(prefix + "model.txt", evil)
    store.write(prefix + MANIFEST, orjson.dumps(manifest))

    service = pipeline.service(1)

    assert not service.state.ready
    assert "manifest.json does not match its signature" in str(service.state.error)


@pytest.mark.fault
def test_a_redelivered_register_signs_nothing_new(pipeline: Pipeline, penguins_csv: bytes) -> None:
    pipeline.harness.upload(penguins_csv)
    pipeline.harness.run()
    [evaluated] = [m for t, m in pipeline.harness.bus.history if t == "model-evaluated"]
    container = pipeline.container
    model = container.config.model_name
    signature = container.artifacts.read(f"models/{model}/versions/1/{SIGNATURE}")

    # A delivery whose predecessor died after signing and publishing, before recording:
    # the handler runs again, finds the signature made for the same manifest bytes.
    outcome = register.handle(
        ModelEvaluated.from_body(orjson.loads(evaluated.data)),
        config=container.config,
        runs=container.runs,
        registry=container.registry,
        leases=container.leases,
        delivery_attempt=2,
    )

    assert outcome.output["version"] == 1
    assert pipeline.calls(SIGN) == 1
    assert container.artifacts.read(f"models/{model}/versions/1/{SIGNATURE}") == signature
    assert pipeline.service(1).state.ready


def test_versions_signed_before_a_rotation_still_verify(
    pipeline: Pipeline, penguins_csv: bytes
) -> None:
    rotated = pipeline.key.replace("cryptoKeyVersions/1", "cryptoKeyVersions/2")
    pipeline.harness.upload(penguins_csv)
    pipeline.harness.run()

    # The service now trusts version 2 of the key (the deploy stage sets it); v1 of the
    # model was signed by version 1 of the same key.
    service = create_app(
        {
            "store": pipeline.container.artifacts,
            "signer": CloudKmsSigner(rotated, pipeline.endpoint),
            "model_name": pipeline.container.config.model_name,
            "model_version": 1,
        }
    )

    assert service.state.ready
