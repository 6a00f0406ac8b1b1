"""The composition root: the one place that turns Settings into adapters.

Adapters are chosen by mode (embedded: filesystem + in-process; emulator and cloud:
the Google Cloud clients, pointed at the emulators by their standard endpoint
variables), never by branches inside stages. Imports of adapter modules are local to
the factory that needs them, so a process loads only what its mode uses (the staging
service never imports the training stack, a Cloud Function never imports Flask).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from modelrail.config import Settings
from modelrail.container import Container
from modelrail.errors import ConfigError
from modelrail.ports import (
    BlobStore,
    Deployer,
    EventBus,
    JobLauncher,
    ManifestSigner,
    Message,
    ModelCatalog,
    PackageRepository,
    Storage,
)

Observer = Callable[[dict[str, Any]], None]


def open_storage(settings: Settings) -> Storage:
    """The bucket factory for this mode."""
    if settings.mode == "embedded":
        from modelrail.adapters.filesystem import FilesystemStorage

        assert settings.storage_root is not None
        return FilesystemStorage(
            settings.storage_root, (settings.data_bucket, settings.artifact_bucket)
        )
    from modelrail.adapters.gcs import GcsStorage

    return GcsStorage(project=settings.project)


def open_artifact_store(settings: Settings) -> BlobStore:
    return open_storage(settings).bucket(settings.artifact_bucket)


def open_packages(settings: Settings) -> PackageRepository:
    """Where versions are published: Artifact Registry (its API on the local control
    plane in emulator mode), a local directory in embedded mode."""
    if settings.mode == "embedded":
        from modelrail.adapters.local_packages import LocalPackageRepository

        return LocalPackageRepository(
            settings.home / "artifact-registry" / settings.artifact_repository
        )
    from modelrail.adapters.artifact_registry import ArtifactRegistryPackages

    return ArtifactRegistryPackages(
        settings.project,
        settings.region,
        settings.artifact_repository,
        settings.artifact_registry_endpoint,
    )


def open_catalog(settings: Settings) -> ModelCatalog:
    """Where versions are registered as Vertex AI model versions (only built when
    pipeline.toml turns it on): Vertex AI (its API on the local control plane in
    emulator mode), a local directory in embedded mode. Their containers run the
    staging image the deployment names; locally, the tag services/staging/Dockerfile's
    build command gives, as nothing local runs it."""
    from modelrail.catalog import Catalog

    image = settings.staging_image
    if image is None and settings.mode == "cloud":
        raise ConfigError(
            "pipeline.toml turns on [vertex] model_registry, but this deployment does not "
            "provide Vertex AI (no MODELRAIL_STAGING_IMAGE for its model versions to serve): "
            "set vertex_model_registry = true in terraform.tfvars, which also grants the "
            "register and deploy accounts access to it"
        )
    image = image or f"modelrail-staging:{settings.code_version}"
    if settings.mode == "embedded":
        from modelrail.adapters.local_models import LocalModels

        return Catalog(
            LocalModels(settings.home / "vertex-ai", settings.project, settings.region), image
        )
    from modelrail.adapters.vertex_models import VertexModels

    return Catalog(VertexModels(settings.project, settings.region, settings.vertex_endpoint), image)


def open_signer(settings: Settings) -> ManifestSigner:
    """What signs manifests (register) and verifies them (the staging service): the
    Cloud KMS key version ``signing_key`` (its API on the local control plane in emulator
    mode), a key file in the state directory in embedded mode."""
    if settings.mode == "embedded":
        from modelrail.adapters.local_signing import LocalManifestSigner

        return LocalManifestSigner.in_home(settings.home)
    if settings.signing_key is None:
        raise ConfigError(
            "set MODELRAIL_SIGNING_KEY to the Cloud KMS key version that signs manifests "
            "(terraform/envs/dev/kms.tf; docs/deploy.md)"
        )
    from modelrail.adapters.kms import CloudKmsSigner

    return CloudKmsSigner(settings.signing_key, settings.kms_endpoint)


def local_staging(settings: Settings, artifacts: BlobStore | None = None) -> Deployer:
    """The staging service as processes on this machine (embedded mode and the
    emulator stack's control plane), smoke-testing with the versions in ``artifacts``
    (the artifact bucket, opened here unless the caller has it open)."""
    from modelrail.adapters.local_staging import LocalStagingDeployer

    return LocalStagingDeployer(settings, artifacts or open_artifact_store(settings))


def bootstrap(
    settings: Settings,
    *,
    observer: Observer | None = None,
    storage_factory: Callable[[], Storage] | None = None,
    deployer_factory: Callable[[], Deployer] | None = None,
    packages_factory: Callable[[], PackageRepository] | None = None,
    catalog_factory: Callable[[], ModelCatalog] | None = None,
    signer_factory: Callable[[], ManifestSigner] | None = None,
) -> Container:
    """Wire the container for ``settings.mode``.

    Tests swap the storage, the deployer, the package repository, the model catalog and
    the signer for fakes or for the cloud adapters on local endpoints; everything else
    is the real thing.
    """
    storage = storage_factory or (lambda: open_storage(settings))
    packages = packages_factory or (lambda: open_packages(settings))
    catalog = catalog_factory or (lambda: open_catalog(settings))
    signer = signer_factory or (lambda: open_signer(settings))
    if settings.mode == "embedded":
        return _embedded(settings, observer, storage, deployer_factory, packages, catalog, signer)

    def bus() -> EventBus:
        from modelrail.adapters.pubsub import PubSubBus

        return PubSubBus(project=settings.project)

    def launcher() -> JobLauncher:
        from modelrail.adapters.cloudrun import CloudRunJobLauncher

        return CloudRunJobLauncher(settings.project, settings.region, settings.run_api_endpoint)

    def deployer() -> Deployer:
        from modelrail.adapters.cloudrun import CloudRunDeployer

        return CloudRunDeployer(
            settings.project,
            settings.region,
            settings.staging_service,
            settings.run_api_endpoint,
            artifacts=open_artifact_store(settings),
            signing_key=settings.signing_key,
        )

    return Container(
        settings,
        storage,
        bus,
        launcher,
        deployer_factory or deployer,
        packages_factory=packages,
        catalog_factory=catalog,
        signer_factory=signer,
        observer=observer,
    )


def _embedded(
    settings: Settings,
    observer: Observer | None,
    storage: Callable[[], Storage],
    deployer_factory: Callable[[], Deployer] | None,
    packages: Callable[[], PackageRepository],
    catalog: Callable[[], ModelCatalog],
    signer: Callable[[], ManifestSigner],
) -> Container:
    """Filesystem buckets, the in-process bus and job, local staging: every stage is
    subscribed to the bus as the topology says, through the same service layer."""
    from modelrail import pipeline
    from modelrail.adapters.inprocess import InProcessBus, InProcessLauncher

    container = Container(
        settings,
        storage_factory=storage,
        bus_factory=lambda: bus,
        launcher_factory=lambda: InProcessLauncher(
            lambda data: pipeline.consume(container, "train", Message(data, {}))
        ),
        deployer_factory=deployer_factory or (lambda: local_staging(settings, container.artifacts)),
        packages_factory=packages,
        catalog_factory=catalog,
        signer_factory=signer,
        observer=observer,
    )
    bus = InProcessBus(container.topology, settings.home / "dead-letter.jsonl")
    for subscription in container.topology.subscriptions:
        if subscription.consumer is not None:
            stage = subscription.consumer
            bus.subscribe(
                subscription.name,
                lambda message, stage=stage: pipeline.consume(container, stage, message),  # type: ignore[misc]
            )
    return container
