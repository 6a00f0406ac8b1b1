"""The sweep ends runs that cannot end by themselves, and only those."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NoReturn

import pytest

from modelrail.adapters.local.inprocess import InProcessLauncher
from modelrail.domain.registry import Registry
from modelrail.kernel.ports import Blob
from modelrail.service.stages import register
from modelrail.service.sweep import sweep
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

    assert (record.stage, record.error["kind"]) == ("train", "job_failed")
    assert "modelrail-train-dead" in record.error["message"]
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
    evaluated = datetime.fromisoformat(run.stages["evaluate"].finished_at)

    # No delivery took register's lease: within the backoffs (10 + 20 + 40 + 80 s) and a
    # start-up margin for each of the five attempts (5 x 60 s), one may still come
    # (a delivery can fail before it takes the lease); not after.
    assert sweep(harness.container, now=evaluated + timedelta(seconds=450)) == []
    [record] = sweep(harness.container, now=evaluated + timedelta(seconds=451))

    assert (record.stage, record.error["kind"]) == ("register", "stuck")
    assert harness.runs()[0].outcome == "failed"


def test_finished_and_healthy_runs_are_left_alone(harness: Harness, penguins_csv: bytes) -> None:
    harness.upload(penguins_csv)
    harness.run()

    assert sweep(harness.container, now=datetime.now(UTC) + timedelta(days=30)) == []
    assert harness.runs()[0].outcome == "deployed"


class Kill:
    """A process killed while it holds a lease: ``at(lease)`` is where it dies (its bus
    goes with it); ``leaves()`` puts the lease back as a kill leaves it, held until its
    expiry, never released (the test's process unwinds and would release it)."""

    def __init__(self, harness: Harness) -> None:
        self.harness = harness
        self.left: tuple[str, Blob] | None = None

    def at(self, lease: str) -> NoReturn:
        key = f"models/{self.harness.model}/leases/{lease}.json"
        self.left = (key, self.harness.container.artifacts.read(key))
        raise KeyboardInterrupt

    def leaves(self) -> None:
        assert self.left is not None
        key, blob = self.left
        self.harness.container.artifacts.write(key, blob.data)


@pytest.mark.fault
def test_a_register_killed_after_claiming_its_number_ends_within_minutes_naming_the_gap(
    harness: Harness, penguins_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    claim_number = Registry._claim_next_number
    kill = Kill(harness)

    def claimed_then_killed(self: Registry, model: str, run_id: str) -> int:
        claim_number(self, model, run_id)
        kill.at(f"register-{run_id}")

    monkeypatch.setattr(Registry, "_claim_next_number", claimed_then_killed)
    harness.upload(penguins_csv)
    with pytest.raises(KeyboardInterrupt):
        harness.run()
    kill.leaves()
    [run] = harness.runs()
    assert run.outcome == "running"
    state = harness.container.leases.state(harness.model, f"register-{run.run_id}")
    assert state is not None
    assert state.live  # held: renewed by a heartbeat while the delivery lived
    lapsed = datetime.fromtimestamp(state.until, UTC)  # at most a minute after the kill

    # A redelivery may still come within the backoffs and each attempt's start (450 s).
    assert sweep(harness.container, now=lapsed - timedelta(seconds=1)) == []
    assert sweep(harness.container, now=lapsed + timedelta(seconds=449)) == []
    [record] = sweep(harness.container, now=lapsed + timedelta(seconds=451))

    assert (record.stage, record.error["kind"]) == ("register", "stuck")
    assert record.error["details"]["orphaned_version"] == 1
    assert "v1, stays unused" in record.error["message"]
    assert harness.runs()[0].outcome == "failed"
    # Ended within nine minutes of the kill, not after 6000 s.
    killed = datetime.fromisoformat(harness.runs()[0].stages["evaluate"].finished_at)
    assert (lapsed + timedelta(seconds=451) - killed).total_seconds() < 540


@pytest.mark.fault
def test_a_deploy_killed_mid_rollout_ends_once_its_lease_lapses_not_after_6000_s(
    harness: Harness, penguins_csv: bytes
) -> None:
    kill = Kill(harness)

    def killed(model: str, version: int) -> NoReturn:
        kill.at("staging")

    harness.deployer.start = killed  # type: ignore[assignment,method-assign]
    harness.upload(penguins_csv)
    with pytest.raises(KeyboardInterrupt):
        harness.run()
    kill.leaves()
    [run] = harness.runs()
    assert run.outcome == "registered"
    state = harness.container.leases.state(harness.model, "staging")
    assert state is not None
    lapsed = datetime.fromtimestamp(state.until, UTC)

    assert sweep(harness.container, now=lapsed + timedelta(seconds=449)) == []
    [record] = sweep(harness.container, now=lapsed + timedelta(seconds=451))

    assert (record.stage, record.error["kind"]) == ("deploy", "stuck")
    registered = datetime.fromisoformat(run.stages["register"].finished_at)
    assert (lapsed + timedelta(seconds=141) - registered).total_seconds() < 6000
