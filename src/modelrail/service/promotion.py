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
  proposes and approves what staging serves (the sweep calls it).
"""

from __future__ import annotations

import contextlib
import logging

from modelrail.domain.promotion import PRODUCTION, Approval, Outcome, Promotions, Proposal
from modelrail.domain.registry import Alias, Registry
from modelrail.kernel.errors import (
    DeploymentFailed,
    IntegrityError,
    PreconditionFailed,
    Refused,
)
from modelrail.kernel.events import new_id, utcnow
from modelrail.service import shadow
from modelrail.service.container import Container
from modelrail.service.reconcile import (
    LEASE_HEARTBEAT_S,
    LEASE_TTL_S,
    LEASE_WAIT_S,
    STAGING,
    converge,
)
from modelrail.service.rollout import roll_out_production

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
    outcome = carry_out(container, proposal)
    promotions.record(proposal.model, outcome)
    return outcome


def carry_out_approved(container: Container) -> list[Outcome]:
    """Carry out every approved proposal of the model that has no outcome, oldest first,
    unless a rollout holds production's lease (it is under way); one gone stale since
    its approval, or approved by its proposer where pipeline.toml does not allow it (an
    approver who may propose too), is recorded as failed, not rolled out."""
    model, promotions = container.model, Promotions(container.artifacts)
    held = container.leases.state(model, PRODUCTION)
    if held is not None and held.live:
        return []
    outcomes = []
    for entry in promotions.history(model):
        if entry["status"] != "approved":
            continue
        proposal = Proposal.from_json(entry["proposal"])
        try:
            _refuse_self_approval(container, proposal, entry["approval"]["approved_by"])
            _refuse_stale(container.registry, proposal)
        except Refused as stale:
            outcome = Outcome(
                proposal.id, "failed", proposal.production_version, proposal.version,
                utcnow(), detail=str(stale),
            )  # fmt: skip
        else:
            outcome = carry_out(container, proposal)
        promotions.record(model, outcome)
        outcomes.append(outcome)
    return outcomes


def _refuse_self_approval(container: Container, proposal: Proposal, approved_by: str) -> None:
    if approved_by == proposal.proposed_by and not container.config.production_self_approval:
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
    """Roll the approved ``proposal`` out to production under its rollout lease; the
    outcome (``failed`` with why when the rollout or the alias move failed)."""
    model, registry = proposal.model, container.registry
    deployer = container.production_deployer
    promotions = Promotions(container.artifacts)
    moved = (proposal.production_version, proposal.version)
    with container.leases.hold(
        model,
        PRODUCTION,
        f"promotion:{proposal.id}",
        ttl_s=LEASE_TTL_S,
        wait_s=LEASE_WAIT_S,
        heartbeat_s=LEASE_HEARTBEAT_S,
    ) as lease:
        try:
            deployment, steps = roll_out_production(
                model,
                proposal.version,
                registry=registry,
                deployer=deployer,
                policy=container.config.canary,
                on_step=lambda steps: promotions.progress(model, proposal.id, steps),
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


def follow_staging(container: Container) -> Outcome | None:
    """With ``[production] approval = "none"``: promote what staging's alias names when
    production serves another version (modelrail proposes and approves it); None when
    there is nothing to do."""
    if container.config.production_approval != "none":
        return None
    registry, model = container.registry, container.model
    staging, production = registry.alias(model, STAGING), registry.alias(model, PRODUCTION)
    if staging is None or (production is not None and production.version == staging.version):
        return None
    why = "[production] approval = none"
    try:
        proposal = propose(container, version=None, reason=why, proposed_by=AUTOMATIC)
    except Refused as refused:  # [production] min_shadow_agreement not met yet
        log.info(f"{model}: staging's v{staging.version} not promoted: {refused}")
        return None
    return _decide(container, proposal, Approval(proposal.id, AUTOMATIC, why, utcnow()))
