"""deploy: staging moves forward to a registered version, smoke-tested through the
Deployer port, or stays on what it served."""

from __future__ import annotations

import dataclasses

import pytest

from modelrail.kernel.errors import DeploymentFailed, IntegrityError, LeaseHeld
from modelrail.kernel.events import ModelDeployed, ModelRegistered
from modelrail.kernel.ports import Deployment
from modelrail.service.stages import deploy
from tests.fakes import FakeDeployer
from tests.unit.stages.conftest import Ports, delivered, register_versions, registered


def staging(ports: Ports) -> int | None:
    alias = ports.registry.alias(ports.model, deploy.STAGING)
    return alias.version if alias is not None else None


def deployed(ports: Ports, event: ModelRegistered) -> ModelDeployed:
    outcome = ports.call(deploy.handle, event)
    assert outcome.status == "succeeded"
    assert isinstance(outcome.event, ModelDeployed)
    return delivered(outcome.event)


def test_a_registered_version_goes_to_staging(ports: Ports, penguins_csv: bytes) -> None:
    event = registered(ports, penguins_csv)

    outcome = ports.call(deploy.handle, event)

    assert isinstance(outcome.event, ModelDeployed)
    moved = delivered(outcome.event)
    assert ports.deployer.deployed == [Deployment("http://staging.test", "rev-1", ports.model, 1)]
    assert staging(ports) == 1
    assert (moved.model, moved.version, moved.previous_version) == (ports.model, 1, None)
    assert (moved.url, moved.revision) == ("http://staging.test", "rev-1")
    assert (moved.run_id, moved.causation_id) == (event.run_id, event.event_id)
    assert outcome.output == {"url": moved.url, "revision": moved.revision}


def test_the_next_version_names_the_one_it_replaced(ports: Ports) -> None:
    first, second = register_versions(ports, 2)
    deployed(ports, first)

    moved = deployed(ports, second)

    assert (moved.version, moved.previous_version) == (2, 1)
    assert [d.version for d in ports.deployer.deployed] == [1, 2]
    assert staging(ports) == 2


def test_a_stale_event_is_skipped_and_staging_stays_on_the_newer_version(
    ports: Ports,
) -> None:
    first, second = register_versions(ports, 2)
    deployed(ports, second)

    outcome = ports.call(deploy.handle, first)  # late: v2 overtook it

    assert outcome.status == "skipped"
    assert outcome.event is None
    assert outcome.output["reason"] == "staging already serves v2"
    assert staging(ports) == 2
    assert [d.version for d in ports.deployer.deployed] == [2]


def test_a_skipped_deploy_still_makes_staging_serve_what_its_alias_names(
    ports: Ports,
) -> None:
    first, _ = register_versions(ports, 2)
    # The alias moved to v2, and the process died before v2 served (a fresh deployer
    # serves nothing).
    ports.registry.move_alias(ports.model, deploy.STAGING, 2)

    outcome = ports.call(deploy.handle, first)

    assert outcome.status == "skipped"
    assert [d.version for d in ports.deployer.deployed] == [2]
    assert "convergence" not in outcome.output


def test_a_failed_smoke_test_keeps_staging_on_the_previous_version(ports: Ports) -> None:
    ports = dataclasses.replace(ports, deployer=FakeDeployer(fail_versions=frozenset({2})))
    first, second = register_versions(ports, 2)
    deployed(ports, first)

    with pytest.raises(DeploymentFailed, match="staging serves v1") as raised:
        ports.call(deploy.handle, second)

    assert raised.value.details["restored_version"] == 1
    assert {p["check"] for p in raised.value.details["problems"]} == {"smoke_test"}
    assert staging(ports) == 1
    current = ports.deployer.current()
    assert current is not None
    assert current.version == 1
    assert [d.version for d in ports.deployer.deployed] == [1]


def test_a_version_whose_manifest_was_rewritten_is_never_deployed(ports: Ports) -> None:
    (event,) = register_versions(ports, 1)
    key = event.manifest_uri.removeprefix(f"gs://{ports.artifacts.bucket}/")
    rewritten = ports.artifacts.read(key).data.replace(b'"blessed": true', b'"blessed": false')
    assert rewritten != ports.artifacts.read(key).data
    ports.artifacts.corrupt(key, rewritten)

    with pytest.raises(IntegrityError):
        ports.call(deploy.handle, event)

    assert ports.deployer.deployed == []
    assert staging(ports) is None


def test_a_rollout_in_progress_leaves_the_event_for_redelivery(ports: Ports) -> None:
    (event,) = register_versions(ports, 1)

    with (
        ports.leases.hold(ports.model, deploy.STAGING, "another-rollout", ttl_s=30, wait_s=0),
        pytest.raises(LeaseHeld, match="another-rollout"),
    ):
        ports.impatient().call(deploy.handle, event)

    assert ports.deployer.deployed == []
    assert staging(ports) is None
