"""Which adapter each port gets in each mode: embedded mode's local ones, or Google
Cloud's (cloud mode, and emulator mode against the local cloud's endpoints).

The composition root wires these into a Container; the staging service, a deployable
of its own that never loads the pipeline, opens its bucket and signer here too. Each
factory imports its adapter module only when called, so a process loads only what its
mode uses (the staging service never imports the training stack).
"""

from __future__ import annotations

from modelrail.kernel.errors import ConfigError
from modelrail.kernel.ports import (
    BlobStore,
    DaskClusters,
    Deployer,
    ManifestSigner,
    ModelCatalog,
    PackageRepository,
    Secrets,
    Storage,
    Webhooks,
)
from modelrail.settings.process import Settings


def open_storage(settings: Settings) -> Storage:
    """The bucket factory for this mode."""
    if settings.mode == "embedded":
        from modelrail.adapters.local.filesystem import FilesystemStorage

        assert settings.storage_root is not None
        return FilesystemStorage(
            settings.storage_root, (settings.data_bucket, settings.artifact_bucket)
        )
    from modelrail.adapters.google.gcs import GcsStorage

    return GcsStorage(project=settings.project)


def open_dask_clusters(settings: Settings) -> DaskClusters:
    """Where training on Dask gets its cluster: the one ``[training.dask]`` or the
    deployment names; in the cloud with Terraform's ``dask_training`` switch on, VMs
    made for the run; else a local one per run."""
    if settings.dask_cloud == "gcp":
        from modelrail.adapters.google.dask_gcp import GcpDask, GcpDaskClusters

        values = (
            settings.dask_gcp_project, settings.dask_gcp_zone, settings.dask_gcp_network,
            settings.dask_gcp_service_account, settings.dask_gcp_image,
        )  # fmt: skip
        if any(value is None for value in values):
            raise ConfigError(
                "MODELRAIL_DASK_CLOUD=gcp needs MODELRAIL_DASK_GCP_PROJECT, _ZONE, _NETWORK, "
                "_SERVICE_ACCOUNT and _IMAGE (Terraform's dask_training switch sets them)"
            )
        project, zone, network, account, image = (str(value) for value in values)
        machine, workers = settings.dask_gcp_machine_type, settings.dask_gcp_workers
        gcp = GcpDask(project, zone, network, machine, workers, account, image)
        return GcpDaskClusters(gcp)
    if settings.dask_cloud is not None:
        raise ConfigError(f"MODELRAIL_DASK_CLOUD={settings.dask_cloud!r}: only 'gcp' is known")
    from modelrail.adapters.local.dask import DaskClusters as LocalDaskClusters

    return LocalDaskClusters(settings.dask_scheduler)


def open_artifact_store(settings: Settings) -> BlobStore:
    return open_storage(settings).bucket(settings.artifact_bucket)


def open_packages(settings: Settings) -> PackageRepository:
    """Where versions are published: Artifact Registry (its API on the local control
    plane in emulator mode), a local directory in embedded mode."""
    if settings.mode == "embedded":
        from modelrail.adapters.local.packages import LocalPackageRepository

        return LocalPackageRepository(
            settings.home / "artifact-registry" / settings.artifact_repository
        )
    from modelrail.adapters.google.artifact_registry import ArtifactRegistryPackages

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
    from modelrail.domain.catalog import Catalog

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
        from modelrail.adapters.local.models import LocalModels

        return Catalog(
            LocalModels(settings.home / "vertex-ai", settings.project, settings.region), image
        )
    from modelrail.adapters.google.vertex_models import VertexModels

    return Catalog(VertexModels(settings.project, settings.region, settings.vertex_endpoint), image)


def open_signer(settings: Settings) -> ManifestSigner:
    """What signs manifests (register) and verifies them (the staging service): the
    Cloud KMS key version ``signing_key`` (its API on the local control plane in emulator
    mode), a key file in the state directory in embedded mode."""
    if settings.mode == "embedded":
        from modelrail.adapters.local.signing import LocalManifestSigner

        return LocalManifestSigner.in_home(settings.home)
    if settings.signing_key is None:
        raise ConfigError(
            "set MODELRAIL_SIGNING_KEY to the Cloud KMS key version that signs manifests "
            "(terraform/envs/dev/kms.tf; docs/deploy.md)"
        )
    from modelrail.adapters.google.kms import CloudKmsSigner

    return CloudKmsSigner(settings.signing_key, settings.kms_endpoint)


def open_secrets(settings: Settings) -> Secrets:
    """Where webhook URLs are kept: Secret Manager in the cloud, the environment on this
    machine (embedded mode, and emulator mode: the local cloud has no Secret Manager)."""
    if settings.mode == "cloud":
        from modelrail.adapters.google.secrets import SecretManagerSecrets

        return SecretManagerSecrets()
    from modelrail.adapters.local.secrets import EnvironmentSecrets

    return EnvironmentSecrets()


def open_webhooks(settings: Settings) -> Webhooks:
    """What posts notifications: HTTP, the same in every mode."""
    from modelrail.adapters.webhooks import HttpWebhooks

    return HttpWebhooks()


def local_staging(
    settings: Settings, model: str, *, reconcile_every_s: float | None = None
) -> Deployer:
    """A model's staging service as processes on this machine (embedded mode and the
    emulator stack's control plane); a supervisor it starts converges staging to its
    alias every ``reconcile_every_s`` (None: never)."""
    from modelrail.adapters.local.staging import LocalStagingDeployer

    return LocalStagingDeployer(settings, model, reconcile_every_s=reconcile_every_s)


def local_production(
    settings: Settings, model: str, *, reconcile_every_s: float | None = None
) -> Deployer:
    """A model's production service as processes on this machine: its own supervisor,
    state and port beside staging's, converging to the ``production`` alias."""
    from modelrail.adapters.local.staging import PRODUCTION, LocalStagingDeployer

    return LocalStagingDeployer(
        settings, model, reconcile_every_s=reconcile_every_s, role=PRODUCTION
    )
