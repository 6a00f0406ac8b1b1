"""Each stage's ``handle`` called directly: its event in, its ports hand-built.

The ports are the fakes of ``tests/fakes.py`` (in-memory buckets, a fake deployer), a
job launcher that only records, and the real registry, leases and run log over the
in-memory artifact bucket, the registry signing with a key of the test's own. The
chain helpers run a stage on the event the stage before it returned, passed through
its JSON body as the bus would pass it (``delivered``), so every event is held to its
schema on the way.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import random
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import orjson
import pytest

from modelrail.adapters.local.dask import DaskClusters
from modelrail.adapters.local.packages import LocalPackageRepository
from modelrail.adapters.local.signing import LocalManifestSigner
from modelrail.domain.config import PipelineConfig
from modelrail.domain.leases import Lease, Leases
from modelrail.domain.registry import Registry
from modelrail.domain.runs import RunLog
from modelrail.kernel.events import (
    DatasetValidated,
    DataUploaded,
    ModelEvaluated,
    ModelRegistered,
    ModelTrained,
    PipelineEvent,
    derive_run_id,
)
from modelrail.kernel.ports import JobState
from modelrail.service import pipeline
from modelrail.service.handoff import JobHandoff
from modelrail.service.stages import Outcome, evaluate, register, train, validate
from tests.fakes import FakeDeployer, InMemoryStorage, InMemoryStore
from tests.manifests import describe

DATA_BUCKET = "modelrail-data"
ARTIFACT_BUCKET = "modelrail-artifacts"
UPLOAD = "uploads/penguins/penguins.csv"

E = TypeVar("E", bound=PipelineEvent)


class RecordingLauncher:
    """A JobLauncher that starts nothing: it keeps each launch's job and event bytes."""

    def __init__(self) -> None:
        self.launched: list[tuple[str, bytes]] = []

    def launch(self, job: str, event_json: bytes) -> str:
        self.launched.append((job, event_json))
        return f"{job}/executions/{len(self.launched)}"

    def state(self, execution: str) -> JobState:
        started = {f"{job}/executions/{n}" for n, (job, _) in enumerate(self.launched, 1)}
        return JobState("running") if execution in started else JobState("unknown")


class ImpatientLeases(Leases):
    """Leases that never wait for another holder: a live one is ``LeaseHeld`` at once.

    The handlers wait minutes for a held lease (a registration, a rollout), on the
    real clock, and name no clock or sleep of their own; a test of a held lease takes
    the wait away here rather than sleeping through it."""

    @contextlib.contextmanager
    def hold(
        self,
        model: str,
        name: str,
        holder: str,
        *,
        ttl_s: float,
        wait_s: float,
        heartbeat_s: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> Iterator[Lease]:
        with super().hold(
            model, name, holder, ttl_s=ttl_s, wait_s=0.0, heartbeat_s=heartbeat_s,
            sleep=sleep, clock=clock,
        ) as lease:  # fmt: skip
            yield lease


@dataclasses.dataclass
class Ports:
    """Every port and setting a stage handler may name, built for one test."""

    config: PipelineConfig
    storage: InMemoryStorage
    registry: Registry
    leases: Leases
    runs: RunLog
    launcher: RecordingLauncher
    deployer: FakeDeployer
    data_bucket: str = DATA_BUCKET
    code_version: str = "test"
    training_job: str = "modelrail-train"
    compiler: str | None = None  # the training job builds no compiled predictor here
    # In-memory buckets cannot feed Dask workers: these runs train in one process
    # (tests/integration/test_dask_training.py trains on Dask).
    clusters: DaskClusters = dataclasses.field(default_factory=DaskClusters)
    # No validate job configured: every upload is validated in place
    # (tests/unit/test_validate_job.py hands large ones to a job).
    handoff: JobHandoff | None = None

    @property
    def model(self) -> str:
        return self.config.model_name

    @property
    def data(self) -> InMemoryStore:
        return self.storage.stores[DATA_BUCKET]

    @property
    def artifacts(self) -> InMemoryStore:
        return self.storage.stores[ARTIFACT_BUCKET]

    def call(self, handler: Callable[..., Outcome], event: Any, **delivery: Any) -> Outcome:
        """``handler`` on ``event``, given the ports and settings it names by name, as
        the service layer gives them (``pipeline.inject``): ``delivery`` values first
        (``run_id``, ``causation_id``, ``message_id``, …), then this test's ports."""
        given: dict[str, Any] = {"message_id": ""}
        if callable(getattr(event, "lineage", None)):  # a trigger: the run's lineage so far
            given["lineage"] = {"trigger": event.lineage(), "config": self.config.summary()}
        return pipeline.inject(handler, self, {**given, **delivery})(event)

    def provide(self, name: str) -> Any:
        """The port or setting named ``name`` (``pipeline.Provider``)."""
        if not hasattr(self, name):
            raise TypeError(f"no port named {name!r} here")
        return getattr(self, name)

    def impatient(self) -> Ports:
        """The same ports, but leases held by another holder are not waited for."""
        return dataclasses.replace(self, leases=ImpatientLeases(self.artifacts))


@pytest.fixture(scope="session")
def tiny_config(config: PipelineConfig) -> PipelineConfig:
    """The bundled configuration, its training cut to a few fast rounds: still well
    past the bundled gate on the penguins (hold-out accuracy about 0.98)."""
    params = {**config.params, "learning_rate": 0.3}
    return dataclasses.replace(config, num_boost_round=20, params=params)


@pytest.fixture
def signer(tmp_path: Path) -> LocalManifestSigner:
    return LocalManifestSigner(tmp_path / "keys" / "manifest-signing.pem")


@pytest.fixture
def ports(tiny_config: PipelineConfig, signer: LocalManifestSigner, tmp_path: Path) -> Ports:
    storage = InMemoryStorage(DATA_BUCKET, ARTIFACT_BUCKET)
    artifacts = storage.stores[ARTIFACT_BUCKET]
    registry = Registry(
        artifacts, signer=signer, packages=LocalPackageRepository(tmp_path / "packages")
    )
    return Ports(
        config=tiny_config,
        storage=storage,
        registry=registry,
        leases=Leases(artifacts),
        runs=RunLog(artifacts),
        launcher=RecordingLauncher(),
        deployer=FakeDeployer(),
    )


# -- data -------------------------------------------------------------------------


def shuffled_labels(csv: bytes, seed: int = 7) -> bytes:
    """``csv`` with its first column (the penguins' species) shuffled among its rows:
    valid under the contract, and nothing a model can learn."""
    header, *rows = csv.decode().splitlines()
    cells = [row.split(",", 1) for row in rows]
    labels = [label for label, _ in cells]
    random.Random(seed).shuffle(labels)
    body = [f"{label},{rest}" for label, (_, rest) in zip(labels, cells, strict=True)]
    return ("\n".join([header, *body]) + "\n").encode()


# -- the chain --------------------------------------------------------------------


def delivered(event: E) -> E:
    """``event`` as the next stage receives it: encoded to its JSON body and decoded
    again, both against its schema."""
    body = orjson.loads(orjson.dumps(event.to_body()))
    return type(event).from_body(body)


def upload(ports: Ports, data: bytes, name: str = UPLOAD) -> DataUploaded:
    """``data`` written to the data bucket, and the notification that says so."""
    generation = ports.data.write(name, data, content_type="text/csv")
    return DataUploaded(bucket=DATA_BUCKET, name=name, generation=generation)


def run_of(ports: Ports, trigger: DataUploaded) -> str:
    """The run the pipeline would derive for ``trigger`` under this configuration."""
    return derive_run_id(trigger.idempotency_key, ports.config.sha256)


def validated(ports: Ports, data: bytes) -> DatasetValidated:
    trigger = upload(ports, data)
    outcome = ports.call(
        validate.handle, trigger, run_id=run_of(ports, trigger), causation_id="message-upload"
    )
    assert isinstance(outcome.event, DatasetValidated)
    return delivered(outcome.event)


def trained(ports: Ports, data: bytes) -> ModelTrained:
    outcome = ports.call(train.handle, validated(ports, data))
    assert isinstance(outcome.event, ModelTrained)
    return delivered(outcome.event)


def evaluated(ports: Ports, data: bytes) -> ModelEvaluated:
    outcome = ports.call(evaluate.handle, trained(ports, data))
    assert isinstance(outcome.event, ModelEvaluated)
    return delivered(outcome.event)


def registered(ports: Ports, data: bytes) -> ModelRegistered:
    outcome = ports.call(
        register.handle, evaluated(ports, data), delivery_attempt=1, message_id="message-eval"
    )
    assert isinstance(outcome.event, ModelRegistered)
    return delivered(outcome.event)


# -- versions without training (deploy, rollback) -----------------------------------

EXAMPLES = [
    {
        "island": "Dream",
        "bill_length_mm": 46.5,
        "bill_depth_mm": 17.9,
        "flipper_length_mm": 192,
        "body_mass_g": 3500,
        "sex": "female",
    }
]


def register_versions(ports: Ports, count: int) -> list[ModelRegistered]:
    """``count`` signed versions of the model, each with an example to smoke-test with
    (their model files are placeholders: the fake deployer never loads them), and the
    ``model-registered`` event of each."""
    events = []
    for _ in range(count):
        run_id = f"run-{len(ports.registry.versions(ports.model)) + 1:020d}"
        version, manifest = ports.registry.register(
            ports.model,
            run_id,
            lambda number: {"model.txt": b"tree %d" % number},
            describe(ports.model, run_id, examples=EXAMPLES),
        )
        events.append(registered_event(ports, run_id, version, manifest))
    return events


def registered_event(ports: Ports, run_id: str, version: int, manifest: bytes) -> ModelRegistered:
    lineage: Mapping[str, Any] = {
        "trigger": {"kind": "retrain", "key": f"request:{run_id}"},
        "config": ports.config.summary(),
    }
    return ModelRegistered(
        run_id=run_id,
        causation_id=f"evaluated-{version}",
        lineage=lineage,
        model=ports.model,
        version=version,
        manifest_uri=ports.registry.manifest_uri(ports.model, version),
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
    )
