"""The composition root: the one place that turns Settings into adapters.

Adapters are chosen by mode (embedded: filesystem + in-process; emulator and cloud:
the Google Cloud clients, pointed at the emulators by their standard endpoint
variables), never by branches inside stages. Imports of adapter modules are local to
the factory that needs them, so a process loads only what its mode uses (the staging
service never imports the training stack, a Cloud Function never imports Flask).
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from modelrail.adapters.by_mode import (
    local_production,
    local_staging,
    open_catalog,
    open_dask_clusters,
    open_packages,
    open_secrets,
    open_signer,
    open_storage,
    open_webhooks,
)
from modelrail.domain.runs import StageRecord
from modelrail.kernel.events import BatchRequested, DataUploaded
from modelrail.kernel.ports import (
    Deployer,
    EventBus,
    JobLauncher,
    ManifestSigner,
    Message,
    ModelCatalog,
    PackageRepository,
    Secrets,
    Storage,
    Webhooks,
)
from modelrail.service.container import Container
from modelrail.service.reconcile import RECONCILE_EVERY_S
from modelrail.settings.process import Settings

Observer = Callable[[StageRecord], None]


def bootstrap(
    settings: Settings,
    *,
    observer: Observer | None = None,
    storage_factory: Callable[[], Storage] | None = None,
    deployer_factory: Callable[[str], Deployer] | None = None,
    production_factory: Callable[[str], Deployer] | None = None,
    packages_factory: Callable[[], PackageRepository] | None = None,
    catalog_factory: Callable[[], ModelCatalog] | None = None,
    signer_factory: Callable[[], ManifestSigner] | None = None,
    secrets_factory: Callable[[], Secrets] | None = None,
    webhooks_factory: Callable[[], Webhooks] | None = None,
) -> Container:
    """Wire the container for ``settings.mode``.

    Tests swap the storage, the deployer, the package repository, the model catalog,
    the signer, the secrets and the webhooks for fakes or for the cloud adapters on
    local endpoints; everything else is the real thing.
    """
    storage = storage_factory or (lambda: open_storage(settings))
    packages = packages_factory or (lambda: open_packages(settings))
    catalog = catalog_factory or (lambda: open_catalog(settings))
    signer = signer_factory or (lambda: open_signer(settings))
    notify = (
        secrets_factory or (lambda: open_secrets(settings)),
        webhooks_factory or (lambda: open_webhooks(settings)),
    )
    if settings.mode == "embedded":
        return _embedded(
            settings, observer, storage, deployer_factory, packages, catalog, signer, notify,
            production_factory,
        )  # fmt: skip

    def bus() -> EventBus:
        from modelrail.adapters.google.pubsub import PubSubBus

        return PubSubBus(project=settings.project)

    def launcher() -> JobLauncher:
        from modelrail.adapters.google.cloudrun import CloudRunJobLauncher

        return CloudRunJobLauncher(settings.project, settings.region, settings.run_api_endpoint)

    def deployer(model: str) -> Deployer:
        from modelrail.adapters.google.cloudrun import CloudRunDeployer

        return CloudRunDeployer(
            settings.project,
            settings.region,
            settings.service("staging", model),  # each model's own service
            settings.run_api_endpoint,
            signing_key=settings.signing_key,
        )

    def production(model: str) -> Deployer:
        from modelrail.adapters.google.cloudrun import CloudRunDeployer
        from modelrail.adapters.google.monitoring import CloudMonitoringMetrics

        return CloudRunDeployer(
            settings.project,
            settings.region,
            settings.service("production", model),
            settings.run_api_endpoint,
            signing_key=settings.signing_key,
            # Its canary splits the traffic by revision and judges each revision's
            # numbers in Cloud Monitoring (the emulator stack's control plane answers
            # both APIs).
            metrics=CloudMonitoringMetrics(settings.project, settings.run_api_endpoint),
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
        clusters_factory=lambda: open_dask_clusters(settings),
        secrets_factory=notify[0],
        webhooks_factory=notify[1],
        observer=observer,
        # Production (docs/architecture.md, "Production"): each model's own service.
        production_deployer_factory=production_factory or production,
    )


def _embedded(
    settings: Settings,
    observer: Observer | None,
    storage: Callable[[], Storage],
    deployer_factory: Callable[[str], Deployer] | None,
    packages: Callable[[], PackageRepository],
    catalog: Callable[[], ModelCatalog],
    signer: Callable[[], ManifestSigner],
    notify: tuple[Callable[[], Secrets], Callable[[], Webhooks]],
    production_factory: Callable[[str], Deployer] | None = None,
) -> Container:
    """Filesystem buckets, the in-process bus and job, local staging: every stage (and
    the notifier) is subscribed to the bus as the topology says, through the same
    service layer."""
    from modelrail.adapters.local.inprocess import InProcessBus, InProcessLauncher
    from modelrail.service import consumers

    container = Container(
        settings,
        storage_factory=storage,
        bus_factory=lambda: bus,
        launcher_factory=lambda: InProcessLauncher(
            lambda job, data: _run_job(container, job, data)
        ),
        deployer_factory=deployer_factory
        or (lambda model: local_staging(settings, model, reconcile_every_s=RECONCILE_EVERY_S)),
        packages_factory=packages,
        catalog_factory=catalog,
        signer_factory=signer,
        clusters_factory=lambda: open_dask_clusters(settings),
        secrets_factory=notify[0],
        webhooks_factory=notify[1],
        observer=observer,
        runs_here=True,
        # Production (docs/architecture.md, "Production"): each model's own local service.
        production_deployer_factory=production_factory
        or (lambda model: local_production(settings, model, reconcile_every_s=RECONCILE_EVERY_S)),
        upload_notifier=lambda bucket, name, generation: _notify_upload(
            bus, bucket, name, generation
        ),
    )
    bus = InProcessBus(container.topology, settings.home / "dead-letter.jsonl")
    for subscription in container.topology.subscriptions:
        if subscription.consumer is not None:
            consumer = subscription.consumer
            bus.subscribe(
                subscription.name,
                lambda message, consumer=consumer: consumers.consume(container, consumer, message),  # type: ignore[misc]
            )
    return container


def _run_job(container: Container, job: str, data: bytes) -> object:
    """Embedded mode's job execution, here and now: a batch prediction (one task), or
    the stage a job runs."""
    from modelrail.service import pipeline

    if job == container.settings.batch_job:
        from modelrail.composition import batch
        from modelrail.service.batch import Task

        return batch.run(container, BatchRequested.from_body(orjson.loads(data)), Task())
    return pipeline.consume(
        container, _job_stage(container.settings, job), Message(data, {}), in_job=True
    )


def _job_stage(settings: Settings, job: str) -> str:
    """The stage a job runs: validate's at size, else training."""
    return "validate" if job == settings.validate_job else "train"


def _notify_upload(bus: EventBus, bucket: str, name: str, generation: int) -> None:
    """What Cloud Storage publishes for a finalized object (a ``JSON_API_V1``
    notification on ``data-uploaded``), which filesystem buckets cannot."""
    body = DataUploaded(bucket=bucket, name=name, generation=generation).to_body()
    bus.publish(
        "data-uploaded",
        orjson.dumps(body),
        {
            "eventType": "OBJECT_FINALIZE",
            "payloadFormat": "JSON_API_V1",
            "bucketId": bucket,
            "objectId": name,
            "objectGeneration": str(generation),
        },
    )
