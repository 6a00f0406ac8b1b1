"""Promotion to production: proposed by one person, approved by another, carried out
under production's rollout lease; refused (nothing written) when it cannot be approved,
recorded either way once approved. The unit harness (in-memory buckets, the in-process
bus) with a fake deployer for staging and another for production."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime

import orjson
import pytest

from modelrail.composition.bootstrap import bootstrap
from modelrail.domain import predictions
from modelrail.domain.promotion import PRODUCTION, Approval, Promotions
from modelrail.domain.rollout import CanaryPolicy
from modelrail.entry.history_text import step_text
from modelrail.kernel.errors import Refused
from modelrail.kernel.ports import Candidate
from modelrail.service.container import Container
from modelrail.service.promotion import (
    AUTOMATIC,
    approve,
    carry_out,
    carry_out_approved,
    follow_staging,
    longest_rollout_s,
    propose,
)
from modelrail.service.rollout import ROLLOUT_OVERHEAD_S
from modelrail.settings.process import Settings
from tests.conftest import installed
from tests.fakes import FakeDeployer, FakeSplittingDeployer, InMemoryStorage
from tests.unit.conftest import Harness


@dataclasses.dataclass
class Production:
    harness: Harness
    deployer: FakeDeployer

    @property
    def container(self) -> Container:
        return self.harness.container

    def alias(self) -> int | None:
        return self.container.registry.aliases(self.harness.model).get(PRODUCTION)

    def promote_and_approve(self, version: int | None = None) -> str:
        proposal = propose(self.container, version=version, reason="ship it", proposed_by="ana")
        approve(self.container, proposal.id, reason="looks good", approved_by="bo")
        return proposal.id


def _production(settings: Settings, fail_versions: frozenset[int] = frozenset()) -> Production:
    storage = InMemoryStorage(settings.data_bucket, settings.artifact_bucket)
    staging, production = FakeDeployer(), FakeDeployer(fail_versions)
    container = installed(
        bootstrap(
            settings,
            storage_factory=lambda: storage,
            deployer_factory=lambda _model: staging,
            production_factory=lambda _model: production,
        )
    )
    return Production(Harness(container, storage, staging), production)


@pytest.fixture
def versions(settings: Settings, penguins_csv: bytes) -> Production:
    """v1 and v2 registered, staging at v2, production at v1 (promoted by ana, approved
    by bo)."""
    production = _production(settings, fail_versions=frozenset({3}))
    harness = production.harness
    harness.upload(penguins_csv)
    harness.run()
    production.promote_and_approve()
    harness.retrain("second")
    harness.run()
    assert harness.container.registry.aliases(harness.model)["staging"] == 2
    return production


def test_an_approved_proposal_moves_production_and_records_who_and_when(
    versions: Production,
) -> None:
    proposal = propose(versions.container, version=None, reason="v2 is better", proposed_by="ana")

    outcome = approve(versions.container, proposal.id, reason="agreed", approved_by="bo")

    assert (outcome.status, outcome.from_version, outcome.to_version) == ("succeeded", 1, 2)
    assert versions.alias() == 2
    assert [d.version for d in versions.deployer.deployed] == [1, 2]
    assert [d.version for d in versions.harness.deployer.deployed] == [1, 2]  # staging untouched
    history = Promotions(versions.container.artifacts).history(versions.harness.model)
    assert [(e["proposal"]["version"], e["status"]) for e in history] == [
        (1, "succeeded"),
        (2, "succeeded"),
    ]
    latest = history[-1]
    assert latest["proposal"]["proposed_by"] == "ana"
    assert latest["approval"]["approved_by"] == "bo"
    assert latest["outcome"]["revision"] == "rev-2"


@pytest.mark.fault
def test_the_proposer_cannot_approve_unless_pipeline_toml_allows_it(
    versions: Production,
) -> None:
    container = versions.container
    proposal = propose(container, version=None, reason="mine", proposed_by="ana")

    with pytest.raises(Refused, match="someone else approves it"):
        approve(container, proposal.id, reason="self", approved_by="ana")
    assert Promotions(container.artifacts).approval(container.model, proposal.id) is None

    container.__dict__["config"] = dataclasses.replace(
        container.config, production_self_approval=True
    )
    assert approve(container, proposal.id, reason="self", approved_by="ana").status == "succeeded"


@pytest.mark.fault
@pytest.mark.parametrize(
    ("proposal_id", "message"),
    [("nope", "has no proposal 'nope'"), ("../x", "is not a proposal id")],
)
def test_an_unknown_proposal_is_refused(
    versions: Production, proposal_id: str, message: str
) -> None:
    with pytest.raises(Refused, match=message):
        approve(versions.container, proposal_id, reason="?", approved_by="bo")


@pytest.mark.fault
def test_a_decided_proposal_is_refused_a_second_time(versions: Production) -> None:
    proposal = propose(versions.container, version=None, reason="v2", proposed_by="ana")
    approve(versions.container, proposal.id, reason="ok", approved_by="bo")

    with pytest.raises(Refused, match="decided already: approved by bo"):
        approve(versions.container, proposal.id, reason="again", approved_by="cy")


@pytest.mark.fault
def test_a_proposal_is_stale_once_production_moved(versions: Production) -> None:
    older = propose(versions.container, version=2, reason="v2", proposed_by="ana")
    newer = propose(versions.container, version=2, reason="v2 too", proposed_by="cy")
    approve(versions.container, newer.id, reason="ok", approved_by="bo")

    with pytest.raises(Refused, match="stale: production moved"):
        approve(versions.container, older.id, reason="ok", approved_by="bo")
    assert versions.alias() == 2


@pytest.mark.fault
def test_a_proposal_of_stagings_version_is_stale_once_staging_moved(
    versions: Production,
) -> None:
    proposal = propose(versions.container, version=None, reason="v2", proposed_by="ana")
    versions.harness.retrain("third")
    versions.harness.run()  # staging moves to v3

    with pytest.raises(Refused, match="stale: it proposed staging's v2"):
        approve(versions.container, proposal.id, reason="ok", approved_by="bo")
    assert versions.alias() == 1


@pytest.mark.fault
@pytest.mark.parametrize(
    ("version", "message"), [(9, "no registered version 9"), (1, "already serves")]
)
def test_a_version_that_is_not_registered_or_already_serves_is_not_proposed(
    versions: Production, version: int, message: str
) -> None:
    with pytest.raises(Refused, match=message):
        propose(versions.container, version=version, reason="x", proposed_by="ana")


@pytest.mark.fault
def test_a_failed_rollout_is_recorded_and_production_keeps_serving(
    versions: Production,
) -> None:
    """v3's production revision answers 500: its smoke test fails, production keeps v1
    and the promotion's outcome says why."""
    versions.harness.retrain("third")
    versions.harness.run()
    proposal = propose(versions.container, version=3, reason="v3", proposed_by="ana")

    outcome = approve(versions.container, proposal.id, reason="ok", approved_by="bo")

    assert outcome.status == "failed"
    assert "500" in outcome.detail
    assert versions.alias() == 1
    current = versions.deployer.current()
    assert current is not None
    assert current.version == 1
    record = Promotions(versions.container.artifacts).outcome(versions.harness.model, proposal.id)
    assert record == outcome


def test_with_approval_none_production_follows_staging(versions: Production) -> None:
    container = versions.container
    assert follow_staging(container) is None  # approval is required by default
    container.__dict__["config"] = dataclasses.replace(container.config, production_approval="none")

    proposal = follow_staging(container)

    assert proposal is not None
    assert follow_staging(container) is None  # it waits to be carried out
    [outcome] = carry_out_approved(container)
    assert (outcome.proposal, outcome.status) == (proposal.id, "succeeded")
    assert versions.alias() == 2
    history = Promotions(container.artifacts).history(versions.harness.model)
    assert history[-1]["approval"]["approved_by"] == AUTOMATIC
    assert follow_staging(container) is None  # production serves staging's version


def test_an_approval_not_carried_out_is_rolled_out_by_the_sweeps_pass(
    versions: Production,
) -> None:
    """In the cloud the approver only approves; the sweep carries it out, once."""
    proposal = propose(versions.container, version=None, reason="v2", proposed_by="ana")

    assert (
        approve(versions.container, proposal.id, reason="ok", approved_by="bo", carry=False) is None
    )
    assert versions.alias() == 1

    [outcome] = carry_out_approved(versions.container)
    assert (outcome.proposal, outcome.status) == (proposal.id, "succeeded")
    assert versions.alias() == 2
    assert carry_out_approved(versions.container) == []


@pytest.mark.fault
def test_an_approval_gone_stale_before_the_sweep_is_recorded_as_failed(
    versions: Production,
) -> None:
    proposal = propose(versions.container, version=None, reason="v2", proposed_by="ana")
    approve(versions.container, proposal.id, reason="ok", approved_by="bo", carry=False)
    versions.harness.retrain("third")
    versions.harness.run()  # staging moves on before the sweep comes

    [outcome] = carry_out_approved(versions.container)

    assert outcome.status == "failed"
    assert "stale" in outcome.detail
    assert versions.alias() == 1


@pytest.mark.fault
def test_the_sweep_does_not_carry_out_an_approval_by_the_proposer(versions: Production) -> None:
    """In the cloud the approval is an object an approver writes: one who proposed too
    gets a recorded refusal from the sweep, not a rollout."""
    promotions = Promotions(versions.container.artifacts)
    proposal = propose(versions.container, version=None, reason="v2", proposed_by="ana")
    promotions.approve(versions.harness.model, Approval(proposal.id, "ana", "mine", "now"))

    [outcome] = carry_out_approved(versions.container)

    assert outcome.status == "failed"
    assert "someone else approves it" in outcome.detail
    assert versions.alias() == 1


@pytest.mark.fault
def test_a_second_rollout_of_production_at_once_is_refused(versions: Production) -> None:
    proposal = propose(versions.container, version=None, reason="v2", proposed_by="ana")
    model = versions.harness.model
    held = versions.container.leases.hold(model, PRODUCTION, "another rollout", ttl_s=30, wait_s=0)
    refused = pytest.raises(Refused, match="under way \\(another rollout\\): one at a time")
    with held, refused:
        approve(versions.container, proposal.id, reason="ok", approved_by="bo")

    assert Promotions(versions.container.artifacts).approval(model, proposal.id) is None
    assert approve(versions.container, proposal.id, reason="ok", approved_by="bo") is not None


@pytest.mark.fault
def test_an_approval_reached_by_both_approve_and_the_sweep_rolls_out_once(
    versions: Production,
) -> None:
    """``modelrail approve`` and the sweep may both reach one approved proposal: the
    second to take production's lease finds the outcome and rolls nothing out."""
    proposal = propose(versions.container, version=None, reason="v2", proposed_by="ana")
    approve(versions.container, proposal.id, reason="ok", approved_by="bo", carry=False)
    deploys = len(versions.deployer.deployed)

    first = carry_out(versions.container, proposal)
    second = carry_out(versions.container, proposal)

    assert first.status == "succeeded"
    assert second == first
    assert len(versions.deployer.deployed) == deploys + 1
    assert versions.alias() == 2


@pytest.mark.fault
def test_an_approval_gone_stale_while_it_waited_for_the_lease_is_recorded_as_failed(
    versions: Production,
) -> None:
    """Staleness is judged again under production's lease: a proposal approved, then
    overtaken by another promotion before its turn came, is not rolled out."""
    first = propose(versions.container, version=None, reason="v2", proposed_by="ana")
    approve(versions.container, first.id, reason="ok", approved_by="bo", carry=False)
    second = propose(versions.container, version=None, reason="v2 again", proposed_by="cy")
    approve(versions.container, second.id, reason="ok", approved_by="bo")
    assert versions.alias() == 2

    outcome = carry_out(versions.container, first)

    assert (outcome.status, versions.alias()) == ("failed", 2)
    assert "stale" in outcome.detail
    assert Promotions(versions.container.artifacts).outcome(versions.harness.model, first.id)


@pytest.mark.fault
def test_the_sweep_leaves_a_canary_longer_than_its_time_left_to_a_later_pass(
    versions: Production,
) -> None:
    """The sweep's job has a timeout: a canary whose holds do not fit what is left of
    the pass is not started (the next pass, with its whole time, carries it out); one
    that could not end within the whole timeout is recorded as failed, saying so."""
    container = versions.container
    policy = CanaryPolicy(steps=(10.0, 50.0, 100.0), hold_s=600.0)
    container.__dict__["config"] = dataclasses.replace(container.config, canary=policy)
    proposal = propose(container, version=None, reason="v2", proposed_by="ana")
    approve(container, proposal.id, reason="ok", approved_by="bo", carry=False)
    needs = longest_rollout_s(policy)
    assert needs == 2 * 600.0 + ROLLOUT_OVERHEAD_S
    promotions = Promotions(container.artifacts)

    assert carry_out_approved(container, timeout_s=needs, time_left_s=needs - 1) == []
    assert promotions.outcome(versions.harness.model, proposal.id) is None

    [outcome] = carry_out_approved(container, timeout_s=needs - 1, time_left_s=needs - 1)
    assert outcome.status == "failed"
    assert "var.sweep.timeout_seconds" in outcome.detail
    assert promotions.outcome(versions.harness.model, proposal.id) == outcome
    assert versions.alias() == 1


def _log(
    container: Container, version: int, label: str, count: int, service: str = "production"
) -> None:
    """``count`` answered requests of ``version`` on ``service`` in its prediction log,
    now, each predicting ``label`` (the features missing: only the predictions are
    compared)."""
    model = container.model
    service = container.settings.service(service, model)
    width = len(container.registry.manifest(model, version).features["features"])
    now = datetime.now(UTC)
    lines = b"".join(
        orjson.dumps(
            {
                "time": predictions.timestamp(now),
                "request_id": f"r{version}-{n}",
                "status": 200,
                "service": service,
                "instances": [[None] * width],
                "predictions": [{"label": label}],
            },
            option=orjson.OPT_APPEND_NEWLINE,
        )
        for n in range(count)
    )
    key = f"{predictions.day_prefix(model, version, now.date())}{uuid.uuid4().hex}.jsonl"
    container.artifacts.write(key, lines)


@pytest.mark.fault
@pytest.mark.parametrize(("new_label", "status"), [("Gentoo", "failed"), ("Adelie", "succeeded")])
def test_a_canary_whose_predictions_shift_from_the_old_revisions_is_rolled_back(
    versions: Production, new_label: str, status: str
) -> None:
    """Where the prediction log is on, a step is also judged on how the new revision's
    predictions differ from the old one's over the same traffic: v2 answering another
    class than v1 to the same requests breaches, as the same class does not."""
    container = versions.container
    policy = CanaryPolicy(steps=(10.0, 100.0), hold_s=60.0, min_requests=50,
                          max_prediction_psi=0.25, min_logged_predictions=100)  # fmt: skip
    container.__dict__["config"] = dataclasses.replace(container.config, canary=policy)

    def traffic(candidate: Candidate) -> None:
        _log(container, 1, "Adelie", 120)
        _log(container, candidate.version, new_label, 120)
        # What staging answered meanwhile is not production's traffic.
        _log(container, candidate.version, "Chinstrap", 500, service="staging")

    splitting = FakeSplittingDeployer(versions.deployer.deployed, traffic)
    container.__dict__["production_deployer"] = splitting

    proposal = versions.promote_and_approve()

    recorded = Promotions(container.artifacts).outcome(versions.harness.model, proposal)
    assert recorded is not None
    assert recorded.status == status
    step = recorded.steps[0]
    assert step["predictions"]["judged"] is True
    assert (step["predictions"]["old_logged"], step["predictions"]["new_logged"]) == (120, 120)
    assert f"predictions PSI {step['predictions']['psi']} against the old" in step_text(step)
    if status == "failed":
        assert "predictions shifted" in step["breach"]
        assert step["predictions"]["psi"] > 0.25
        assert versions.alias() == 1
    else:
        assert step["breach"] is None
        assert step["predictions"]["psi"] == 0.0
        assert versions.alias() == 2
