"""Promotion: a version goes from staging to production when one person proposes it
and another approves it (``domain.promotion`` holds the records).

- ``propose``: staging's version (or one named) is written as a proposal, create-only,
  with the alias states it was decided on. Only a registered version can be proposed
  (every registered version was blessed: by the gate, or by a person); one production
  already serves is refused.
- ``approve``: refused for an unknown proposal, one already decided, a stale one
  (production's alias, or staging's for a proposal of staging's version, moved since)
  and, unless pipeline.toml's ``[production] self_approval`` allows it, for the person
  who proposed it. The approval is written create-only (of two approvers, one wins),
  then carried out under production's rollout lease: the version's signed manifest
  verified, its revision started and smoke-tested on the production service, then the
  ``production`` alias moved by compare-and-set from the generation the proposal was
  decided on. A failed rollout leaves production serving what its alias names
  (``reconcile.roll_out``); either way the outcome is recorded.
- ``carry_out_approved``: the sweep's pass (every 10 minutes in the cloud, where the
  approver only writes the approval and the sweep's account alone may move
  production): every approved proposal with no outcome and no live rollout is carried
  out, or recorded as failed when it went stale meanwhile; locally it also finishes an
  approval whose ``modelrail approve`` died before its outcome.
- ``follow_staging``: with ``[production] approval = "none"``, modelrail itself
  proposes and approves what staging serves (the sweep calls it, then carries it out
  as any approval).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import Any

from modelrail.domain.leases import Lease
from modelrail.domain.promotion import PRODUCTION, Approval, Outcome, Promotions, Proposal
from modelrail.domain.registry import Alias, Registry
from modelrail.domain.rollout import CanaryPolicy
from modelrail.kernel.errors import (
    DeploymentFailed,
    IntegrityError,
    ModelrailError,
    PreconditionFailed,
    Refused,
)
from modelrail.kernel.events import new_id, utcnow
from modelrail.service import shadow
from modelrail.service.container import Container
from modelrail.service.monitoring import prediction_shift
from modelrail.service.reconcile import (
    LEASE_HEARTBEAT_S,
    LEASE_TTL_S,
    LEASE_WAIT_S,
    STAGING,
    converge,
)
from modelrail.service.rollout import ROLLOUT_OVERHEAD_S, roll_out_production

# Who proposes and approves with ``[production] approval = "none"``.
AUTOMATIC = "modelrail (approval = none)"

log = logging.getLogger(__name__)


def _generation(alias: Alias | None) -> int:
    return alias.generation if alias is not None else 0


def propose(
    container: Container, *, version: int | None, reason: str, proposed_by: str
) -> Proposal:
    """Propose ``version`` (default: what staging's alias names) for production."""
    model, registry = container.model, container.registry
    if not reason.strip():
        raise Refused("say why it should go to production (--reason): it is kept with it")
    staging = registry.alias(model, STAGING)
    target = version
    if target is None:
        if staging is None:
            raise Refused(f"staging serves no version of {model!r} yet: nothing to propose")
        target = staging.version
    known = registry.versions(model)
    if target not in known:
        raise Refused(
            f"{model!r} has no registered version {target} (it has "
            f"{', '.join(f'v{v}' for v in known) or 'none'}): only a version the gate "
            "passed or a person blessed is registered, and only those go to production"
        )
    production = registry.alias(model, PRODUCTION)
    if production is not None and production.version == target:
        raise Refused(f"production already serves {model} v{target}")
    shadow.refuse_short(
        container.artifacts, container.config, model,
        production=production.version if production is not None else None, candidate=target,
    )  # fmt: skip
    proposal = Proposal(
        id=new_id()[:12],
        model=model,
        version=target,
        proposed_by=proposed_by,
        reason=reason,
        proposed_at=utcnow(),
        production_version=production.version if production is not None else None,
        production_generation=_generation(production),
        staging_generation=_generation(staging) if version is None else None,
    )
    Promotions(container.artifacts).propose(proposal)
    return proposal


def approve(
    container: Container, proposal_id: str, *, reason: str, approved_by: str, carry: bool = True
) -> Outcome | None:
    """Approve the proposal and, with ``carry``, carry it out; the recorded outcome
    (None without ``carry``: the sweep carries it out, ``carry_out_approved``).
    ``Refused`` (nothing written) when it cannot be approved."""
    model, registry = container.model, container.registry
    promotions = Promotions(container.artifacts)
    if not reason.strip():
        raise Refused("say why you approve it (--reason): it is kept with the promotion")
    try:
        proposal = promotions.proposal(model, proposal_id)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    if proposal is None:
        raise Refused(f"{model!r} has no proposal {proposal_id!r} (modelrail promotions)")
    decided = promotions.approval(model, proposal_id)
    if decided is not None:
        raise Refused(
            f"proposal {proposal_id} was decided already: approved by {decided.approved_by} "
            f"at {decided.approved_at}"
        )
    _refuse_self_approval(container, proposal, approved_by)
    _refuse_stale(registry, proposal)
    shadow.refuse_short(
        container.artifacts, container.config, model,
        production=proposal.production_version, candidate=proposal.version,
    )  # fmt: skip
    held = container.leases.state(model, PRODUCTION)
    if held is not None and held.live:
        raise Refused(
            f"a rollout of {model}'s production is under way ({held.holder}): one at a "
            "time; approve once it ended (modelrail rollout status)"
        )
    approval = Approval(proposal_id, approved_by, reason, utcnow())
    return _decide(container, proposal, approval, carry=carry)


def _decide(
    container: Container, proposal: Proposal, approval: Approval, *, carry: bool = True
) -> Outcome | None:
    """Write the approval (once: of two approvers, one wins), then, with ``carry``,
    carry the proposal out and record its outcome."""
    promotions = Promotions(container.artifacts)
    try:
        promotions.approve(proposal.model, approval)
    except PreconditionFailed:
        decided = promotions.approval(proposal.model, proposal.id)
        raise Refused(
            f"proposal {proposal.id} was decided meanwhile, by "
            f"{decided.approved_by if decided is not None else 'someone else'}"
        ) from None
    if not carry:
        return None
    return carry_out(container, proposal)


def carry_out_approved(
    container: Container, *, timeout_s: float | None = None, time_left_s: float | None = None
) -> list[Outcome]:
    """Carry out every approved proposal of the model that has no outcome, oldest first,
    unless a rollout holds production's lease (it is under way). One gone stale since
    its approval, or approved by its proposer where pipeline.toml does not allow it (an
    approver who may propose too), is recorded as failed, not rolled out.

    ``timeout_s``, ``time_left_s``: the caller's (the sweep job's) timeout, and how long
    it may still run. A rollout that could not end within the whole timeout
    (``longest_rollout_s``) is recorded as failed, saying so; one that fits a fresh pass
    but not what is left of this one waits for the next pass."""
    model, promotions = container.model, Promotions(container.artifacts)
    held = container.leases.state(model, PRODUCTION)
    if held is not None and held.live:
        return []
    needs = longest_rollout_s(container.config.canary)
    outcomes = []
    for entry in promotions.history(model):
        if entry["status"] != "approved":
            continue
        proposal = Proposal.from_json(entry["proposal"])
        if timeout_s is not None and needs > timeout_s:
            outcome = Outcome(
                proposal.id, "failed", proposal.production_version, proposal.version,
                utcnow(), detail=f"its rollout may take {needs:.0f} s ([production.canary] "
                f"holds and the revision's start) and the sweep job stops after "
                f"{timeout_s:.0f} s: shorten the holds or raise var.sweep.timeout_seconds, "
                "then propose again",
            )  # fmt: skip
            with contextlib.suppress(PreconditionFailed):  # recorded meanwhile
                promotions.record(model, outcome)
                outcomes.append(outcome)
            continue
        if time_left_s is not None and needs > time_left_s:
            log.info(f"{model}: promotion {proposal.id} may take {needs:.0f} s, the pass has "
                     f"{time_left_s:.0f} s left: the next pass carries it out")  # fmt: skip
            continue
        outcomes.append(carry_out(container, proposal))
    return outcomes


def longest_rollout_s(policy: CanaryPolicy) -> float:
    """How long a production rollout may take at most: every held step, and the
    revision's start, smoke test and traffic moves."""
    return policy.hold_s * (len(policy.steps) - 1) + ROLLOUT_OVERHEAD_S


def _refuse_self_approval(container: Container, proposal: Proposal, approved_by: str) -> None:
    config = container.config
    if approved_by == AUTOMATIC and config.production_approval == "none":
        return  # modelrail proposes and approves: what approval = "none" asks for
    if approved_by == proposal.proposed_by and not config.production_self_approval:
        raise Refused(
            f"{approved_by} proposed {proposal.id}: someone else approves it "
            "(pipeline.toml's [production] self_approval = true allows it)"
        )


def _refuse_stale(registry: Registry, proposal: Proposal) -> None:
    model = proposal.model
    production = registry.alias(model, PRODUCTION)
    if _generation(production) != proposal.production_generation:
        now = f"v{production.version}" if production is not None else "nothing"
        raise Refused(
            f"proposal {proposal.id} is stale: production moved since it was made "
            f"(then v{proposal.production_version}, now {now}); propose again"
        )
    if proposal.staging_generation is not None:
        staging = registry.alias(model, STAGING)
        if _generation(staging) != proposal.staging_generation:
            now = f"v{staging.version}" if staging is not None else "nothing"
            raise Refused(
                f"proposal {proposal.id} is stale: it proposed staging's v{proposal.version}, "
                f"and staging moved since (now {now}); propose again"
            )


def carry_out(container: Container, proposal: Proposal) -> Outcome:
    """Roll the approved ``proposal`` out to production and record its outcome, both
    under production's rollout lease; the outcome (``failed`` with why when it went
    stale, was approved by its proposer where pipeline.toml does not allow it, or the
    rollout or the alias move failed). One carried out already (``modelrail approve``
    and the sweep may both reach it) is not rolled out again: its outcome is returned."""
    model, promotions = proposal.model, Promotions(container.artifacts)
    with container.leases.hold(
        model,
        PRODUCTION,
        f"promotion:{proposal.id}",
        ttl_s=LEASE_TTL_S,
        wait_s=LEASE_WAIT_S,
        heartbeat_s=LEASE_HEARTBEAT_S,
    ) as lease:
        done = promotions.outcome(model, proposal.id)
        if done is not None:
            return done
        outcome = _roll_out(container, proposal, lease)
        try:
            promotions.record(model, outcome)
        except PreconditionFailed:  # recorded by a holder whose lease lapsed meanwhile
            return promotions.outcome(model, proposal.id) or outcome
    return outcome


def _roll_out(container: Container, proposal: Proposal, lease: Lease) -> Outcome:
    model, registry = proposal.model, container.registry
    deployer = container.production_deployer
    moved = (proposal.production_version, proposal.version)
    approval = Promotions(container.artifacts).approval(model, proposal.id)
    try:
        if approval is None:
            raise Refused(f"proposal {proposal.id} has no approval")
        _refuse_self_approval(container, proposal, approval.approved_by)
        _refuse_stale(registry, proposal)
    except Refused as refused:
        return Outcome(proposal.id, "failed", *moved, utcnow(), detail=str(refused))
    try:
        deployment, steps = roll_out_production(
            model,
            proposal.version,
            registry=registry,
            deployer=deployer,
            policy=container.config.canary,
            on_step=lambda steps: _progress(container, proposal, steps),
            before_promote=lease.check,
            shift=functools.partial(
                prediction_shift,
                container,
                service=container.settings.service(PRODUCTION, model),
            ),
        )
        lease.check()
        registry.move_alias(
            model, PRODUCTION, proposal.version, if_generation=proposal.production_generation
        )
    except (DeploymentFailed, IntegrityError) as exc:
        return Outcome(
            proposal.id, "failed", *moved, utcnow(), detail=str(exc),
            steps=exc.details.get("steps", []),
        )  # fmt: skip
    except PreconditionFailed:
        # Production's alias moved while this rolled out: serve what it names.
        with contextlib.suppress(DeploymentFailed, IntegrityError):
            converge(model, registry=registry, deployer=deployer, alias_name=PRODUCTION)
        return Outcome(
            proposal.id, "failed", *moved, utcnow(),
            detail="production's alias moved while the rollout ran; it serves what "
            "the alias names", steps=steps,
        )  # fmt: skip
    return Outcome(
        proposal.id, "succeeded", *moved, utcnow(),
        revision=deployment.revision, url=deployment.url, steps=steps,
    )  # fmt: skip


def _progress(container: Container, proposal: Proposal, steps: list[dict[str, Any]]) -> None:
    """The steps so far, for ``modelrail rollout status``: a write that fails is logged,
    not a reason to end the rollout (its outcome records every step)."""
    try:
        Promotions(container.artifacts).progress(proposal.model, proposal.id, steps)
    except ModelrailError as exc:
        log.warning(f"{proposal.model}: the steps of promotion {proposal.id} not written: {exc}")


def follow_staging(container: Container) -> Proposal | None:
    """With ``[production] approval = "none"``: propose and approve (as modelrail) what
    staging's alias names when production serves another version; the proposal, which
    ``carry_out_approved`` then carries out within the sweep's time; None when there is
    nothing to do."""
    if container.config.production_approval != "none":
        return None
    registry, model = container.registry, container.model
    staging, production = registry.alias(model, STAGING), registry.alias(model, PRODUCTION)
    if staging is None or (production is not None and production.version == staging.version):
        return None
    if any(entry["status"] == "approved" for entry in
           Promotions(container.artifacts).history(model)):  # fmt: skip
        return None  # one is waiting to be carried out: its outcome comes first
    why = "[production] approval = none"
    try:
        proposal = propose(container, version=None, reason=why, proposed_by=AUTOMATIC)
    except Refused as refused:  # [production] min_shadow_agreement not met yet
        log.info(f"{model}: staging's v{staging.version} not promoted: {refused}")
        return None
    _decide(container, proposal, Approval(proposal.id, AUTOMATIC, why, utcnow()), carry=False)
    return proposal
