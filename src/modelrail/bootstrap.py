"""The composition root: the one place that turns Settings into adapters.

Adapters are chosen by mode (embedded: filesystem + in-process; emulator and cloud:
the Google Cloud clients, pointed at the emulators by their standard endpoint
variables), never by branches inside stages. Imports of adapter modules are local to
the factory that needs them, so a process loads only what its mode uses (the staging
service never imports the training stack, a Cloud Function never imports Flask).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any

from modelrail.config import PipelineConfig, Settings
from modelrail.ports import BlobStore, Deployer, EventBus, JobLauncher, Storage
from modelrail.registry import Registry

if TYPE_CHECKING:
    from modelrail.runs import RunLog


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


@dataclasses.dataclass
class Container:
    """Everything a stage may touch, built lazily once per process."""

    settings: Settings
    storage_factory: Callable[[], Storage]
    bus_factory: Callable[[], EventBus]
    launcher_factory: Callable[[], JobLauncher]
    deployer_factory: Callable[[], Deployer]
    # Called with each stage record as it is stored (the CLI shows progress with it).
    observer: Callable[[dict[str, Any]], None] | None = None

    @cached_property
    def config(self) -> PipelineConfig:
        return PipelineConfig.load(self.settings.config_path)

    @cached_property
    def storage(self) -> Storage:
        return self.storage_factory()

    @cached_property
    def artifacts(self) -> BlobStore:
        return self.storage.bucket(self.settings.artifact_bucket)

    @cached_property
    def registry(self) -> Registry:
        return Registry(self.artifacts)

    @cached_property
    def runs(self) -> RunLog:
        from modelrail.runs import RunLog

        return RunLog(self.artifacts)

    @cached_property
    def bus(self) -> EventBus:
        return self.bus_factory()

    @cached_property
    def launcher(self) -> JobLauncher:
        return self.launcher_factory()

    @cached_property
    def deployer(self) -> Deployer:
        return self.deployer_factory()


def bootstrap(
    settings: Settings, *, observer: Callable[[dict[str, Any]], None] | None = None
) -> Container:
    """Wire the container for ``settings.mode``."""
    if settings.mode == "embedded":
        from modelrail.runtime.embedded import build

        return build(settings, observer=observer)

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
        )

    return Container(settings, lambda: open_storage(settings), bus, launcher, deployer, observer)
