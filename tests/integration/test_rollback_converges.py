"""An operator's rollback decides on what staging serves: it first converges staging
to its alias (a crash may have left another version, or nothing), and it rolls out only
a version whose signed manifest checks out. The unit suite's harness (in-memory
buckets, the fake deployer), through the real rollback use case."""

from __future__ import annotations

import pytest

from modelrail.kernel.errors import Refused
from modelrail.service.rollback import rollback
from tests.unit.conftest import Harness, harness
from tests.unit.test_rollback import _three_versions

__all__ = ["harness"]  # the fixture, shared with the unit suite


@pytest.mark.fault
def test_a_rollback_first_puts_back_what_the_alias_names(
    harness: Harness, penguins_csv: bytes
) -> None:
    """Staging's server died (nothing serves) with the alias at v3: asked to roll back
    to v3, the rollback restores v3 before it finds there is nothing to roll back."""
    _three_versions(harness, penguins_csv)
    harness.deployer.deployed.clear()  # the server died: the deployer serves nothing

    with pytest.raises(Refused, match="already serves"):
        rollback(harness.container, to=3, requested_by="ops")

    current = harness.deployer.current()
    assert current is not None
    assert current.version == 3


@pytest.mark.fault
def test_a_rollback_to_a_version_left_serving_by_a_crash_is_decided_on_the_alias(
    harness: Harness, penguins_csv: bytes
) -> None:
    """A deploy crashed after it put v1 on staging, before it moved the alias (at v3):
    a rollback to v2 converges first, then rolls out v2, and the record says v3 → v2."""
    _three_versions(harness, penguins_csv)
    # What the crash left serving.
    harness.deployer.promote(harness.deployer.start(harness.model, 1))

    record = rollback(harness.container, to=2, requested_by="ops")

    assert record.status == "succeeded"
    assert [d.version for d in harness.deployer.deployed][-3:] == [1, 3, 2]
    assert record.output["from_version"] == 3


@pytest.mark.fault
def test_a_rollback_to_an_unsigned_version_fails_with_the_reason(
    harness: Harness, penguins_csv: bytes
) -> None:
    _three_versions(harness, penguins_csv)
    artifacts = harness.storage.bucket(harness.container.settings.artifact_bucket)
    artifacts._objects.pop(f"models/{harness.model}/versions/2/manifest.sig")  # type: ignore[attr-defined]
    deployed_before = list(harness.deployer.deployed)

    record = rollback(harness.container, to=2, requested_by="ops")

    assert record.status == "failed"
    assert "no signature" in record.error["message"]
    assert harness.deployer.deployed == deployed_before  # nothing rolled out
    assert harness.container.registry.aliases(harness.model)["staging"] == 3
