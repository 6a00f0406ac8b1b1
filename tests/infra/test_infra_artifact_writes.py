"""The artifact bucket's write conditions deny nothing the pipeline does: the real
pipeline, its notifier, the sweep, the monitor and a batch prediction run on in-memory
buckets, every object each of them writes is recorded, and each must match what
Terraform lets that account write (local.artifact_writes, local.model_writes, and the
notifier's, the monitor's and the batch job's own folders)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from modelrail.adapters.local.inprocess import InProcessLauncher
from modelrail.adapters.local.secrets import EnvironmentSecrets
from modelrail.composition import batch as batch_job
from modelrail.composition.bootstrap import bootstrap
from modelrail.kernel.events import BatchRequested
from modelrail.kernel.logs import PipelineContextFilter
from modelrail.service import batch
from modelrail.service.monitoring import monitor_every
from modelrail.service.sweep import sweep
from modelrail.settings.process import Settings
from tests.conftest import REPO, installed
from tests.fakes import FakeDeployer, FakeWebhooks, InMemoryStorage, InMemoryStore
from tests.infra.conftest import TERRAFORM_DIR
from tests.infra.infra_checks import Terraform, artifact_write_objects, may_write, permits
from tests.unit.conftest import Harness
from tests.unit.test_monitoring import log_shifted_requests

pytestmark = pytest.mark.infra


class RecordingStore(InMemoryStore):
    """Records (the account writing, the object) for every write: the stage whose
    pipeline context is current, or the account named by ``acting_as``."""

    def __init__(self, bucket: str) -> None:
        super().__init__(bucket)
        self.writes: set[tuple[str, str]] = set()
        self.account: str | None = None

    @contextlib.contextmanager
    def acting_as(self, account: str) -> Iterator[None]:
        """Writes meanwhile are ``account``'s (a process of its own in the cloud)."""
        self.account = account
        try:
            yield
        finally:
            self.account = None

    def write(self, key: str, data: bytes, **options: Any) -> int:
        record = logging.LogRecord("writes", logging.INFO, __file__, 0, "", None, None)
        PipelineContextFilter().filter(record)
        writer = self.account or record.pipeline.get("stage", "<no stage>")
        self.writes.add((writer, key))
        return super().write(key, data, **options)


# A webhook for the notifier (its own account in the cloud) to record deliveries to; a
# retrain on drift, for the monitor to start.
NOTIFY = '\n[[notify.webhooks]]\nname = "team"\nurl_env = "TEAM_URL"\n'
ON_DRIFT = "\n[retrain]\non_drift = true\n"


@pytest.fixture
def recorded(settings: Settings, tmp_path: Path) -> tuple[Harness, RecordingStore]:
    storage = InMemoryStorage(settings.data_bucket)
    artifacts = RecordingStore(settings.artifact_bucket)
    storage.stores[settings.artifact_bucket] = artifacts
    deployer = FakeDeployer()
    config = (REPO / "pipeline.toml").read_text()
    config = config.replace('contract = "schemas/', f'contract = "{REPO}/schemas/', 1)
    config += NOTIFY + ON_DRIFT
    (tmp_path / "pipeline.toml").write_text(config)
    container = installed(
        bootstrap(
            settings,
            storage_factory=lambda: storage,
            deployer_factory=lambda _model: deployer,
            secrets_factory=lambda: EnvironmentSecrets({"TEAM_URL": "https://team.example/hook"}),
            webhooks_factory=lambda: FakeWebhooks(503, 200),  # a retry, then delivered
        ),
        tmp_path / "pipeline.toml",
    )
    artifacts.writes.clear()  # the model's definition: the operator's (modelrail add)
    return Harness(container, storage, deployer), artifacts


def test_every_stage_writes_only_what_its_account_may(
    recorded: tuple[Harness, RecordingStore],
    penguins_csv: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    harness, artifacts = recorded
    # A first model, a second run judged against it (drift, champion, reference), the
    # same data again, and a dataset that breaks the contract.
    harness.upload(penguins_csv)
    harness.run()
    harness.upload(penguins_csv, name="uploads/penguins/again.csv")
    harness.run()
    harness.retrain()
    harness.run()
    harness.upload(penguins_csv.replace(b"Adelie", b"Unknown"), name="uploads/penguins/broken.csv")
    harness.run()
    # A training job that dies before recording: the sweep (its own job and account in
    # the cloud) records the run's train stage as failed.
    monkeypatch.setattr(InProcessLauncher, "launch", lambda self, job, event: f"{job}-dead")
    harness.upload(penguins_csv, name="uploads/penguins/died.csv")
    harness.run()
    with artifacts.acting_as("sweep"):
        assert [record.stage for record in sweep(harness.container)] == ["train"]
    # The scheduled monitor (its own job and account) finds the staging version's log
    # drifted and starts a retrain on the newest upload.
    at = datetime.now(UTC)
    served = harness.container.registry.alias(harness.model, "staging")
    assert served is not None
    before = set(artifacts.writes)
    log_shifted_requests(harness.container, served.version, at)
    artifacts.writes = before  # the staging service's log: objectCreator on predictions/
    with artifacts.acting_as("monitor"):
        window = {"since": at - timedelta(minutes=1), "until": at + timedelta(minutes=1)}
        [report] = monitor_every(harness.container, [harness.model], **window)
    assert report["actions"]["retrain"]["started"], report["actions"]
    # A batch prediction (the batch job, its own account): its input and its output
    # under batch/ (the input put there by whoever asks, not by the job).
    InMemoryStore.write(artifacts, "batch/in/penguins.csv", penguins_csv)
    bucket = harness.container.settings.artifact_bucket
    request = BatchRequested(input=f"gs://{bucket}/batch/in/", output=f"gs://{bucket}/batch/out/")
    with artifacts.acting_as("batch"):
        assert batch_job.run(harness.container, request, batch.Task())["scored"]

    allowed = artifact_write_objects(Terraform.load(TERRAFORM_DIR))
    stages = {stage for stage, _ in artifacts.writes}
    denied = sorted(
        (stage, name)
        for stage, name in artifacts.writes
        if not may_write(allowed.get(stage, set()), name, harness.model)
    )
    assert stages == set(allowed), "a stage wrote nothing, or an unknown writer wrote"
    assert denied == [], "these writes would be denied in the cloud: local.artifact_writes"


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("runs/*/stages/validate.json", "runs/run-1/stages/validate.json", True),
        ("runs/*/stages/validate.json", "runs/run-1/stages/train.json", False),
        ("runs/*/stages/validate.json", "models/m/stages/validate.json", False),
        ("models/*", "models/m/versions/1/model.txt", True),
        ("models/<model>/aliases/staging.json", "models/m/aliases/staging.json", True),
        ("models/<model>/aliases/staging.json", "models/m/aliases/champion.json", False),
        ("models/<model>/aliases/staging.json", "models/other/aliases/staging.json", False),
        ("models/<model>/leases/register-*", "models/m/leases/register-run-1.json", True),
        ("models/*/definition.json", "models/m/definition.json", True),
        ("models/*/definition.json", "models/m/versions/1/model.txt", False),
    ],
)
def test_permits_reads_a_pattern_as_the_condition_does(
    pattern: str, name: str, expected: bool
) -> None:
    assert permits(pattern, name, "m") is expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("models/m/versions/1/model.txt", True),
        ("models/m/aliases/champion.json", True),
        ("models/m/definition.json", False),
        ("runs/run-1/stages/register.json", True),
    ],
)
def test_may_write_leaves_out_what_a_not_pattern_names(name: str, expected: bool) -> None:
    """Register's grant, as the IAM table spells it: the registry but the definitions."""
    patterns = {"runs/*/stages/register.json", "models/*", "not models/*/definition.json"}

    assert may_write(patterns, name, "m") is expected
