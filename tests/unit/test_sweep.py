"""The sweep ends runs that cannot end by themselves, and only those."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from modelrail.adapters.inprocess import InProcessLauncher
from modelrail.stages import register
from modelrail.sweep import sweep
from tests.unit.conftest import Harness


@pytest.mark.fault
def test_a_training_job_that_died_is_recorded_failed(
    harness: Harness, penguins_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The job is started and then dies (killed, out of memory) before recording.
    monkeypatch.setattr(InProcessLauncher, "launch", lambda self, job, event: f"{job}-dead")
    harness.upload(penguins_csv)
    harness.run()
    [run] = harness.runs()
    assert run.outcome == "running"

    [record] = sweep(harness.container)

    assert (record["stage"], record["error"]["kind"]) == ("train", "job_failed")
    assert "modelrail-train-dead" in record["error"]["message"]
    [run] = harness.runs()
    assert run.outcome == "failed"
    [failed] = harness.published("pipeline-failed")
    assert failed["run_id"] == run.run_id
    assert sweep(harness.container) == []  # ended once


@pytest.mark.fault
def test_a_lost_message_ends_its_run_once_its_deliveries_cannot_still_come(
    harness: Harness, penguins_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt  # the process dies mid-delivery: the bus goes with it

    monkeypatch.setattr(register, "handle", killed)
    harness.upload(penguins_csv)
    with pytest.raises(KeyboardInterrupt):
        harness.run()
    [run] = harness.runs()
    evaluated = datetime.fromisoformat(run.stages["evaluate"]["finished_at"])

    # Within what register's deliveries may take (5 x (600 s ack deadline + 600 s
    # backoff)), it may still come.
    assert sweep(harness.container, now=evaluated + timedelta(seconds=6000)) == []
    [record] = sweep(harness.container, now=evaluated + timedelta(seconds=6001))

    assert (record["stage"], record["error"]["kind"]) == ("register", "stuck")
    assert harness.runs()[0].outcome == "failed"


def test_finished_and_healthy_runs_are_left_alone(harness: Harness, penguins_csv: bytes) -> None:
    harness.upload(penguins_csv)
    harness.run()

    assert sweep(harness.container, now=datetime.now(UTC) + timedelta(days=30)) == []
    assert harness.runs()[0].outcome == "deployed"
