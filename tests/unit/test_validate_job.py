"""Validate hands an upload above ``MODELRAIL_VALIDATE_IN_JOB_ABOVE_MB`` to its job, which
validates it exactly as the function would; smaller ones stay in the function; one job
per run; the job never hands off again; the sweep ends a run whose job died."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest

from modelrail.adapters.local.inprocess import InProcessLauncher
from modelrail.composition.bootstrap import bootstrap
from modelrail.entry import functions, validate_job
from modelrail.kernel.events import DataUploaded
from modelrail.kernel.ports import JobState, Message
from modelrail.kernel.resources import schema_problems
from modelrail.service import pipeline
from modelrail.service.sweep import sweep
from modelrail.settings.process import Settings
from tests.conftest import installed, settings_env
from tests.fakes import FakeDeployer, InMemoryStorage
from tests.unit.conftest import Harness

JOB = "modelrail-validate"


def _harness(home: Path, **extra: str) -> Harness:
    settings = Settings.from_env(settings_env(home, **extra))
    storage = InMemoryStorage(settings.data_bucket, settings.artifact_bucket)
    deployer = FakeDeployer()
    container = installed(
        bootstrap(
            settings, storage_factory=lambda: storage, deployer_factory=lambda _model: deployer
        )
    )
    return Harness(container, storage, deployer)


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    """Validate hands anything above 1 KiB (the bundled CSV is 15 KiB) to its job."""
    return _harness(
        tmp_path / "home",
        MODELRAIL_VALIDATE_JOB=JOB,
        MODELRAIL_VALIDATE_IN_JOB_ABOVE_MB=str(1 / 1024),
    )


class Launches:
    """Every launch (job, event) and whether validate was recorded when it returned;
    ``run=False``: the job is started and keeps running (or dies) elsewhere, unseen."""

    def __init__(
        self, harness: Harness, monkeypatch: pytest.MonkeyPatch, *, run: bool = True
    ) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.recorded_by_job: list[bool] = []
        launch = InProcessLauncher.launch

        def recording(launcher: InProcessLauncher, job: str, event_json: bytes) -> str:
            self.calls.append((job, orjson.loads(event_json)))
            if not run:
                return f"{job}-elsewhere"
            if job != JOB:
                return launch(launcher, job, event_json)
            runs = harness.container.runs
            before = [r.stages.get("validate") for r in runs.runs()]
            execution = launch(launcher, job, event_json)
            after = [r.stages.get("validate") for r in runs.runs()]
            self.recorded_by_job.append(not any(before) and any(after))
            return execution

        monkeypatch.setattr(InProcessLauncher, "launch", recording)


def test_an_upload_above_the_threshold_is_validated_by_the_job_and_the_run_deploys(
    harness: Harness, penguins_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    launches = Launches(harness, monkeypatch)

    uploaded = harness.upload(penguins_csv)
    harness.run()

    assert launches.calls[0] == (JOB, uploaded.to_body())
    assert [job for job, _ in launches.calls] == [JOB, harness.container.settings.training_job]
    assert launches.recorded_by_job == [True]  # recorded inside the job, not after it
    [run] = harness.runs()
    assert run.outcome == "deployed"
    assert run.stages["validate"].status == "succeeded"
    assert len(harness.published("dataset-validated")) == 1  # the job's, once
    handoff = harness.container.runs.handoff(run.run_id, "validate")
    assert handoff is not None
    assert handoff.job == JOB
    assert handoff.execution is not None
    assert handoff.execution.startswith(f"{JOB}-")
    assert schema_problems("handoff", handoff.to_json(), kind="records") == []


def test_an_upload_at_or_below_the_threshold_is_validated_in_the_function(
    tmp_path: Path, penguins_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness = _harness(
        tmp_path / "home",
        MODELRAIL_VALIDATE_JOB=JOB,
        MODELRAIL_VALIDATE_IN_JOB_ABOVE_MB=str(len(penguins_csv) / 2**20),
    )
    launches = Launches(harness, monkeypatch)

    harness.upload(penguins_csv)
    harness.run()

    assert [job for job, _ in launches.calls] == [harness.container.settings.training_job]
    [run] = harness.runs()
    assert run.outcome == "deployed"
    assert harness.container.runs.handoff(run.run_id, "validate") is None


def test_without_a_validate_job_every_upload_is_validated_in_place(
    settings: Settings, harness: Harness
) -> None:
    assert settings.validate_job is None
    assert installed(bootstrap(settings)).handoff is None
    assert harness.container.handoff is not None


def test_a_redelivered_upload_finds_the_claim_and_launches_no_second_job(
    harness: Harness, penguins_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    launches = Launches(harness, monkeypatch, run=False)
    uploaded = harness.upload(penguins_csv)
    harness.run()
    assert len(launches.calls) == 1

    # The same notification again (a new message), and one message delivered twice.
    harness.deliver_upload(uploaded)
    harness.run()
    message = Message(orjson.dumps(uploaded.to_body()), {}, "m-1", 1, None, "data-uploaded")
    container = harness.container
    assert pipeline.consume(container, "validate", message) is None
    assert pipeline.consume(container, "validate", message) is None

    assert len(launches.calls) == 1
    assert harness.runs() == []  # nothing recorded: the job (still running) records


def test_a_delivery_that_finds_another_claiming_without_an_execution_is_retried(
    harness: Harness, penguins_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    launches = Launches(harness, monkeypatch, run=False)
    uploaded = harness.upload(penguins_csv)  # not delivered yet
    body = orjson.dumps(uploaded.to_body())
    killed, other = (Message(body, {}, m, 1, None, "data-uploaded") for m in ("m-1", "m-2"))

    def died_before_launching(*args: object) -> str:
        raise KeyboardInterrupt  # the claiming delivery's process dies

    monkeypatch.setattr(InProcessLauncher, "launch", died_before_launching)
    with pytest.raises(KeyboardInterrupt):
        pipeline.consume(harness.container, "validate", killed)
    monkeypatch.undo()
    launches = Launches(harness, monkeypatch, run=False)

    with pytest.raises(Exception, match="another delivery is handing validate"):
        pipeline.consume(harness.container, "validate", other)
    assert launches.calls == []
    # The killed delivery's message comes back: it launches, once.
    assert pipeline.consume(harness.container, "validate", killed) is None
    assert [job for job, _ in launches.calls] == [JOB]


def test_the_job_validates_in_place_and_never_hands_off_again(
    tmp_path: Path, penguins_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job's process as Cloud Run starts it: the function's settings, the trigger in
    # MODELRAIL_EVENT, ``python -m modelrail.entry.validate_job``.
    env = settings_env(
        tmp_path / "home",
        MODELRAIL_VALIDATE_JOB=JOB,
        MODELRAIL_VALIDATE_IN_JOB_ABOVE_MB=str(1 / 1024),
    )
    container = installed(bootstrap(Settings.from_env(env)))
    data = container.storage.bucket(container.settings.data_bucket)
    uploaded = DataUploaded(
        bucket=data.bucket,
        name="uploads/penguins/big.csv",
        generation=data.write("uploads/penguins/big.csv", penguins_csv),
    )
    for name, value in {
        **env,
        "MODELRAIL_EVENT": orjson.dumps(uploaded.to_body()).decode(),
    }.items():
        monkeypatch.setenv(name, value)
    launched: list[str] = []
    monkeypatch.setattr(InProcessLauncher, "launch", lambda self, job, event: launched.append(job))
    functions.container.cache_clear()
    try:
        assert validate_job.main() == 0
    finally:
        functions.container.cache_clear()

    assert launched == []
    [run] = container.runs.runs()
    assert run.stages["validate"].status == "succeeded"
    assert container.runs.handoff(run.run_id, "validate") is None
    assert run.stages["validate"].lineage.trigger == uploaded.lineage()


@pytest.mark.fault
def test_the_sweep_ends_a_run_whose_validate_job_died_without_recording(
    harness: Harness, penguins_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    Launches(harness, monkeypatch, run=False)  # started, then killed: never records
    harness.upload(penguins_csv)
    harness.run()
    assert harness.runs() == []  # only the claim says the run exists

    [record] = sweep(harness.container)

    assert (record.stage, record.error["kind"]) == ("validate", "job_failed")
    assert f"{JOB}-elsewhere" in record.error["message"]
    [run] = harness.runs()
    assert run.outcome == "failed"
    assert run.trigger["kind"] == "upload"
    [failed] = harness.published("pipeline-failed")
    assert (failed["run_id"], failed["stage"]) == (run.run_id, "validate")
    assert sweep(harness.container) == []  # ended once


def test_the_sweep_leaves_a_running_validate_job_alone(
    harness: Harness, penguins_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    Launches(harness, monkeypatch, run=False)
    monkeypatch.setattr(InProcessLauncher, "state", lambda self, execution: JobState("running"))
    harness.upload(penguins_csv)
    harness.run()

    assert sweep(harness.container, now=datetime.now(UTC) + timedelta(days=1)) == []
    assert harness.runs() == []


@pytest.mark.fault
def test_the_sweep_ends_a_claim_no_delivery_launched_once_its_deliveries_cannot_come(
    harness: Harness, penguins_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed(*args: object) -> str:
        raise KeyboardInterrupt  # dies between the claim and the launch; the bus with it

    monkeypatch.setattr(InProcessLauncher, "launch", killed)
    harness.upload(penguins_csv)
    with pytest.raises(KeyboardInterrupt):
        harness.run()
    [handoff] = harness.container.runs.handoffs("validate")
    claimed = datetime.fromisoformat(handoff.claimed_at)
    [limit] = {
        s.deliveries_take_s()
        for s in harness.container.topology.subscriptions
        if s.consumer == "validate"
    }

    assert sweep(harness.container, now=claimed + timedelta(seconds=limit - 1)) == []
    [record] = sweep(harness.container, now=claimed + timedelta(seconds=limit + 1))

    assert (record.stage, record.error["kind"]) == ("validate", "stuck")
    assert harness.runs()[0].outcome == "failed"
