"""What a process's stages, commands and pages reach: settings, config and ports.

``bootstrap`` builds it for a mode; nothing here knows which adapters it holds. Each
port is built on first use, so a process pays only for what it touches (the train job
never opens a deployer, a validate function reaches a job launcher only to hand a
large upload to its job).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from modelrail.domain.config import PipelineConfig
from modelrail.domain.leases import Leases
from modelrail.domain.models import Models
from modelrail.domain.registry import Registry
from modelrail.domain.runs import RunLog, StageRecord
from modelrail.kernel.ports import (
    BlobStore,
    DaskClusters,
    Deployer,
    EventBus,
    JobLauncher,
    ManifestSigner,
    ModelCatalog,
    PackageRepository,
    Secrets,
    Storage,
    Webhooks,
)
from modelrail.settings.process import Settings

if TYPE_CHECKING:
    from modelrail.service.handoff import JobHandoff
    from modelrail.settings.topology import Topology


@dataclasses.dataclass
class Container:
    """Everything a stage may touch, built lazily once per process."""

    settings: Settings
    storage_factory: Callable[[], Storage]
    bus_factory: Callable[[], EventBus]
    launcher_factory: Callable[[], JobLauncher]
    deployer_factory: Callable[[str], Deployer]  # the staging of the model named
    packages_factory: Callable[[], PackageRepository]
    catalog_factory: Callable[[], ModelCatalog]
    signer_factory: Callable[[], ManifestSigner]
    clusters_factory: Callable[[], DaskClusters]
    secrets_factory: Callable[[], Secrets]  # where webhook URLs are kept (notifications)
    webhooks_factory: Callable[[], Webhooks]
    # Called with each stage record as it is stored (the CLI shows progress with it).
    observer: Callable[[StageRecord], None] | None = None
    # Whether this process carries the runs it starts (embedded mode: ``bus.drain()``
    # runs them here); elsewhere the functions and the training job do.
    runs_here: bool = False
    # Announces an upload (bucket, object, generation) where the bucket itself cannot
    # (embedded mode's filesystem buckets); None where it does (Cloud Storage's
    # notification, which Terraform and the emulator stack configure).
    upload_notifier: Callable[[str, str, int], None] | None = None
    # The model this container's stages, commands and pages act for (``for_model``);
    # None: the one the installation holds (``Models.resolve``).
    model_name: str | None = None
    # The production service of the model named (``service.production``); None: this
    # process has none (nothing promotes from it).
    production_deployer_factory: Callable[[str], Deployer] | None = None

    def __post_init__(self) -> None:
        # Every port is built once per process, whichever model's container asks.
        for name in _SHARED_FACTORIES:
            factory = getattr(self, name)
            if factory is not None and not hasattr(factory, "cache_info"):  # not cached yet
                setattr(self, name, functools.cache(factory))

    def for_model(self, name: str) -> Container:
        """This process's ports, acting for the model ``name`` (``UnknownModel`` when
        its configuration is read, if it is not installed)."""
        scoped = dataclasses.replace(self, model_name=name)
        scoped.__dict__["models"] = self.models  # one installation, one parse cache
        return scoped

    @cached_property
    def models(self) -> Models:
        return Models(self.artifacts)

    @cached_property
    def model(self) -> str:
        return self.model_name or self.models.resolve(None)

    @cached_property
    def config(self) -> PipelineConfig:
        return self.models.config(self.model)

    @cached_property
    def topology(self) -> Topology:
        # Imported here: the staging service opens its ports through bootstrap and never
        # reads the event graph, so it does not load YAML on its way to ready.
        from modelrail.settings.topology import Topology

        return Topology.load(self.settings.topology_file())

    @cached_property
    def storage(self) -> Storage:
        return self.storage_factory()

    @cached_property
    def artifacts(self) -> BlobStore:
        return self.storage.bucket(self.settings.artifact_bucket)

    @cached_property
    def registry(self) -> Registry:
        return Registry(
            self.artifacts, signer=self.signer, packages=self.packages, catalog=self.catalog
        )

    @cached_property
    def leases(self) -> Leases:
        return Leases(self.artifacts)

    @cached_property
    def runs(self) -> RunLog:
        return RunLog(self.artifacts)

    @cached_property
    def bus(self) -> EventBus:
        return self.bus_factory()

    @cached_property
    def launcher(self) -> JobLauncher:
        return self.launcher_factory()

    @cached_property
    def handoff(self) -> JobHandoff | None:
        """Where validate sends uploads too large for a function (``MODELRAIL_VALIDATE_JOB``);
        None: it validates every upload in place."""
        from modelrail.service.handoff import JobHandoff

        settings = self.settings
        if not settings.validate_job:
            return None
        return JobHandoff(
            "validate",
            settings.validate_job,
            round(settings.validate_in_job_above_mb * 2**20),
            self.launcher,
            self.runs,
        )

    @cached_property
    def deployer(self) -> Deployer:
        """The model's staging service."""
        return self.deployer_factory(self.model)

    @cached_property
    def production_deployer(self) -> Deployer:
        """The model's production service."""
        if self.production_deployer_factory is None:
            raise TypeError("this process was given no production service")
        return self.production_deployer_factory(self.model)

    @cached_property
    def packages(self) -> PackageRepository:
        return self.packages_factory()

    @cached_property
    def catalog(self) -> ModelCatalog | None:
        """Vertex AI's Model Registry when the model's pipeline.toml turns it on
        (``[vertex] model_registry``); otherwise None, and nothing is built. None too
        for a container acting for no model in particular: it reads, never publishes."""
        if self.model_name is None or not self.config.vertex_model_registry:
            return None
        return self.catalog_factory()

    @cached_property
    def signer(self) -> ManifestSigner:
        return self.signer_factory()

    @cached_property
    def clusters(self) -> DaskClusters:
        return self.clusters_factory()

    @cached_property
    def secrets(self) -> Secrets:
        return self.secrets_factory()

    @cached_property
    def webhooks(self) -> Webhooks:
        return self.webhooks_factory()

    def provide(self, name: str) -> Any:
        """The dependency a stage handler names as a parameter: a port (``config``,
        ``storage``, ``registry``, ``leases``, ``runs``, ``launcher``, ``deployer``,
        ``clusters``, ``handoff``) or a setting (``data_bucket``, ``code_version``,
        ``training_job``, ``compiler``)."""
        if name in _FROM_SETTINGS:
            return getattr(self.settings, name)
        if name in _PORTS:
            return getattr(self, name)
        raise TypeError(f"no dependency named {name!r} for a stage handler")


_SHARED_FACTORIES = (
    "storage_factory",
    "bus_factory",
    "launcher_factory",
    "deployer_factory",
    "packages_factory",
    "catalog_factory",
    "signer_factory",
    "clusters_factory",
    "secrets_factory",
    "webhooks_factory",
    "production_deployer_factory",
)
_FROM_SETTINGS = frozenset({"data_bucket", "code_version", "training_job", "compiler"})
_PORTS = frozenset(
    {
        "config",
        "storage",
        "registry",
        "leases",
        "runs",
        "launcher",
        "deployer",
        "clusters",
        "handoff",
    }
)
