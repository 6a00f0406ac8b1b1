"""modelrail rollback on fakes: which version, the same Deployer port, the record kept."""

from __future__ import annotations

import pytest

from modelrail.kernel.errors import Refused
from modelrail.service.rollback import previous_version, rollback
from tests.unit.conftest import Harness


def _three_versions(harness: Harness, penguins_csv: bytes) -> None:
    harness.upload(penguins_csv)
    harness.run()
    harness.retrain("second")
    harness.retrain("third")
    harness.run()
    assert harness.container.registry.aliases(harness.model)["staging"] == 3


@pytest.mark.parametrize(
    ("history", "current", "expected"),
    [
        ([1, 2, 3], 3, 2),
        ([1, 2, 3, 2], 2, 1),  # a second rollback goes further back
        ([1, 2, 3, 2, 4], 4, 2),  # not to 3, which staging was rolled back from
        ([1, 3], 3, 1),  # v2 never served (its smoke test failed)
        ([1], 1, None),
        ([], 2, None),
    ],
)
def test_the_previous_version_is_what_staging_served_last_among_older_ones(
    history: list[int], current: int, expected: int | None
) -> None:
    assert previous_version(history, current) == expected


def test_rollback_redeploys_the_previous_version_and_records_it(
    harness: Harness, penguins_csv: bytes
) -> None:
    _three_versions(harness, penguins_csv)

    record = rollback(harness.container, reason="v3 answers slowly", requested_by="ops")

    assert record.status == "succeeded"
    assert harness.deployer.deployed[-1].version == 2  # through the Deployer port
    aliases = harness.container.registry.aliases(harness.model)
    assert aliases == {"champion": 3, "staging": 2}  # the champion stays the judged best
    deployed = harness.published("model-deployed")[-1]
    assert (deployed["version"], deployed["previous_version"]) == (2, 3)
    trigger = deployed["lineage"]["trigger"]
    assert trigger["kind"] == "rollback"
    assert (trigger["requested_by"], trigger["reason"]) == ("ops", "v3 answers slowly")
    run = harness.container.runs.run(record.run_id)
    assert run is not None
    assert run.outcome == "rolled-back"
    assert harness.runs()[-1].run_id == record.run_id  # in the history with the others


def test_a_second_rollback_goes_further_back(harness: Harness, penguins_csv: bytes) -> None:
    _three_versions(harness, penguins_csv)

    rollback(harness.container, requested_by="ops")
    rollback(harness.container, requested_by="ops")

    assert harness.container.registry.aliases(harness.model)["staging"] == 1


def test_rollback_to_a_named_version(harness: Harness, penguins_csv: bytes) -> None:
    _three_versions(harness, penguins_csv)

    rollback(harness.container, to=1, requested_by="ops")

    assert harness.container.registry.aliases(harness.model)["staging"] == 1


def test_a_rollback_whose_smoke_test_fails_keeps_staging_and_is_recorded(
    harness: Harness, penguins_csv: bytes
) -> None:
    _three_versions(harness, penguins_csv)
    harness.deployer.fail_versions = frozenset({2})

    record = rollback(harness.container, requested_by="ops")

    assert record.status == "failed"
    assert record.error["kind"] == "deployment_failed"
    assert harness.container.registry.aliases(harness.model)["staging"] == 3
    assert harness.deployer.current() is not None
    assert harness.deployer.current().version == 3  # type: ignore[union-attr]
    [failed] = harness.published("pipeline-failed")
    assert failed["stage"] == "rollback"
    run = harness.container.runs.run(record.run_id)
    assert run is not None
    assert run.outcome == "failed"


@pytest.mark.parametrize(
    ("to", "message"),
    [(None, "older than v1"), (1, "already serves"), (7, "has no version 7")],
)
def test_a_rollback_with_nowhere_to_go_is_refused_and_changes_nothing(
    harness: Harness, penguins_csv: bytes, to: int | None, message: str
) -> None:
    harness.upload(penguins_csv)
    harness.run()
    runs_before = len(harness.runs())

    with pytest.raises(Refused, match=message):
        rollback(harness.container, to=to, requested_by="ops")

    assert harness.container.registry.aliases(harness.model)["staging"] == 1
    assert len(harness.runs()) == runs_before


def test_rollback_before_anything_is_staged_is_refused(harness: Harness) -> None:
    with pytest.raises(Refused, match="serves no version"):
        rollback(harness.container, requested_by="ops")
