"""rollback's handle: an operator's command moves staging back through the deploy
stage's rollout, or is refused when there is nothing to move back to."""

from __future__ import annotations

import dataclasses

import pytest

from modelrail.domain.registry import CHAMPION
from modelrail.domain.runs import Began, StageRecord
from modelrail.kernel.errors import DeploymentFailed, Refused
from modelrail.kernel.events import ModelDeployed, ModelRegistered, derive_run_id
from modelrail.service import rollback
from modelrail.service.stages import Outcome, deploy
from tests.fakes import FakeDeployer
from tests.unit.stages.conftest import Ports, delivered, register_versions


def staging(ports: Ports) -> int | None:
    alias = ports.registry.alias(ports.model, deploy.STAGING)
    return alias.version if alias is not None else None


def deploy_and_record(ports: Ports, event: ModelRegistered) -> None:
    """Deploy ``event``'s version and record the stage as the pipeline does: rollback
    reads where staging has been from the run log."""
    began = Began.now()
    outcome = ports.call(deploy.handle, event)
    assert isinstance(outcome.event, ModelDeployed)
    ports.runs.save_stage(
        StageRecord.ended(
            event.run_id,
            "deploy",
            outcome.status,
            began=began,
            lineage=event.lineage,
            output=outcome.output,
            event=outcome.event.to_body(),
        )
    )


def roll_back(ports: Ports, command: rollback.RollbackRequested) -> Outcome:
    """``rollback.handle`` given the run the service layer derives for ``command``."""
    lineage = {"trigger": command.lineage(), "config": ports.config.summary()}
    return ports.call(
        rollback.handle,
        command,
        run_id=derive_run_id(command.idempotency_key, ports.config.sha256),
        causation_id=command.idempotency_key,
        lineage=lineage,
    )


@pytest.fixture
def staged_twice(ports: Ports) -> Ports:
    """v1 then v2 deployed and recorded; v2 is the champion too."""
    for event in register_versions(ports, 2):
        deploy_and_record(ports, event)
    ports.registry.move_alias(ports.model, CHAMPION, 2)
    return ports


def test_staging_moves_back_to_the_named_version(staged_twice: Ports) -> None:
    ports = staged_twice
    command = rollback.RollbackRequested(requested_by="ana", to=1, reason="v2 misroutes")

    outcome = roll_back(ports, command)

    assert isinstance(outcome.event, ModelDeployed)
    moved = delivered(outcome.event)
    assert (moved.version, moved.previous_version) == (1, 2)
    trigger = moved.lineage["trigger"]
    assert (trigger["kind"], trigger["from_version"], trigger["to_version"]) == ("rollback", 2, 1)
    assert staging(ports) == 1
    assert [d.version for d in ports.deployer.deployed] == [1, 2, 1]
    assert ports.registry.aliases(ports.model)[CHAMPION] == 2  # the gate's best stays
    assert outcome.output["requested_by"] == "ana"
    assert outcome.output["reason"] == "v2 misroutes"


def test_without_a_version_staging_goes_back_to_what_it_served_before(
    staged_twice: Ports,
) -> None:
    ports = staged_twice

    outcome = roll_back(ports, rollback.RollbackRequested(requested_by="ana"))

    assert isinstance(outcome.event, ModelDeployed)
    assert (outcome.event.version, outcome.event.previous_version) == (1, 2)
    assert staging(ports) == 1


def test_a_failed_smoke_test_keeps_staging_where_it_was(ports: Ports) -> None:
    ports = dataclasses.replace(ports, deployer=FakeDeployer(fail_versions=frozenset({1})))
    _, second = register_versions(ports, 2)
    deploy_and_record(ports, second)

    with pytest.raises(DeploymentFailed) as raised:
        roll_back(ports, rollback.RollbackRequested(requested_by="ana", to=1))

    assert (raised.value.details["from_version"], raised.value.details["to_version"]) == (2, 1)
    assert staging(ports) == 2
    assert [d.version for d in ports.deployer.deployed] == [2]


def test_nothing_staged_is_refused(ports: Ports) -> None:
    register_versions(ports, 2)

    with pytest.raises(Refused, match="nothing to roll back"):
        roll_back(ports, rollback.RollbackRequested(requested_by="ana"))

    assert ports.deployer.deployed == []
    assert staging(ports) is None


def test_a_first_version_has_nothing_older_to_roll_back_to(ports: Ports) -> None:
    (first,) = register_versions(ports, 1)
    deploy_and_record(ports, first)

    with pytest.raises(Refused, match="older than v1"):
        roll_back(ports, rollback.RollbackRequested(requested_by="ana"))

    assert [d.version for d in ports.deployer.deployed] == [1]
    assert staging(ports) == 1


@pytest.mark.parametrize(
    ("to", "why"), [(7, "has no version 7"), (2, "already serves")], ids=["unknown", "current"]
)
def test_a_target_that_is_not_an_older_version_is_refused(
    staged_twice: Ports, to: int, why: str
) -> None:
    ports = staged_twice

    with pytest.raises(Refused, match=why):
        roll_back(ports, rollback.RollbackRequested(requested_by="ana", to=to))

    assert [d.version for d in ports.deployer.deployed] == [1, 2]
    assert staging(ports) == 2
