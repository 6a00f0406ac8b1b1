"""Promotion records: a version proposed for production, its approval, its outcome.

Production serves what the model's ``production`` alias names (``registry``); the alias
moves only by a promotion, which is three create-only objects beside the registry's
(under ``models/<model>/``), each written once and never rewritten::

    proposals/<id>.json   who proposed which version, why, and what production and
                          staging served then (the alias generations it was decided on)
    approvals/<id>.json   who approved it, why: the decision; its create-only write is
                          what makes a proposal decided, once (of two approvers, one
                          wins). In the cloud only the approver role may create objects
                          under this prefix (docs/deploy.md), and the production deploy
                          acts only on a proposal that has one.
    promotions/<id>.json  what the approved rollout did: succeeded (production moved
                          from, to, the revision) or failed (why, and what serves),
                          with each canary step's numbers
    rollouts/<id>.json    the steps so far, rewritten by the rollout as it goes
                          (``modelrail rollout status``)

A proposal is stale once production's alias (or, for one that proposed staging's
version, staging's alias) moved after it was made: it was decided on another state,
and approving it is refused.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import orjson

from modelrail.kernel.canonical import canonical_json
from modelrail.kernel.errors import NotFound
from modelrail.kernel.ports import BlobStore

PRODUCTION = "production"
_PROPOSALS, _APPROVALS, _PROMOTIONS = "proposals", "approvals", "promotions"
_ROLLOUTS = "rollouts"


def _now() -> str:
    from modelrail.kernel.events import utcnow

    return utcnow()


@dataclasses.dataclass(frozen=True)
class Proposal:
    """``version`` of ``model`` proposed for production by ``proposed_by``. The alias
    states it was decided on: production's version and generation (0: no alias yet) and,
    when it proposed what staging served, staging's generation."""

    id: str
    model: str
    version: int
    proposed_by: str
    reason: str
    proposed_at: str
    production_version: int | None
    production_generation: int
    staging_generation: int | None = None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Proposal:
        return cls(**{field.name: body.get(field.name) for field in dataclasses.fields(cls)})  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True)
class Approval:
    """The decision on a proposal: who approved it, why, when."""

    proposal: str
    approved_by: str
    reason: str
    approved_at: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Approval:
        return cls(**{field.name: body[field.name] for field in dataclasses.fields(cls)})


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What an approved promotion did: ``succeeded`` (production moved ``from_version``
    → ``to_version``, ``revision`` serving it at ``url`` since ``finished_at``) or
    ``failed`` (``detail`` says why and what serves)."""

    proposal: str
    status: str
    from_version: int | None
    to_version: int
    finished_at: str
    revision: str | None = None
    url: str | None = None
    detail: str = ""
    steps: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Outcome:
        return cls(**{field.name: body.get(field.name) for field in dataclasses.fields(cls)})  # type: ignore[arg-type]


class Promotions:
    """The promotion records of every model in one bucket."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store

    # -- writing (each once: ``PreconditionFailed`` if it exists) -------------------
    def propose(self, proposal: Proposal) -> None:
        self._create(proposal.model, _PROPOSALS, proposal.id, proposal.to_json())

    def approve(self, model: str, approval: Approval) -> None:
        self._create(model, _APPROVALS, approval.proposal, approval.to_json())

    def record(self, model: str, outcome: Outcome) -> None:
        self._create(model, _PROMOTIONS, outcome.proposal, outcome.to_json())

    def progress(self, model: str, proposal_id: str, steps: list[dict[str, Any]]) -> None:
        """The steps a rollout took so far (only the holder of production's rollout
        lease writes them)."""
        self.store.write(
            self._key(model, _ROLLOUTS, proposal_id),
            canonical_json({"proposal": proposal_id, "steps": steps, "updated_at": _now()}),
            content_type="application/json",
        )

    def steps(self, model: str, proposal_id: str) -> list[dict[str, Any]]:
        body = self._read(model, _ROLLOUTS, proposal_id)
        return list(body["steps"]) if body is not None else []

    # -- reading --------------------------------------------------------------------
    def proposal(self, model: str, proposal_id: str) -> Proposal | None:
        body = self._read(model, _PROPOSALS, proposal_id)
        return Proposal.from_json(body) if body is not None else None

    def approval(self, model: str, proposal_id: str) -> Approval | None:
        body = self._read(model, _APPROVALS, proposal_id)
        return Approval.from_json(body) if body is not None else None

    def outcome(self, model: str, proposal_id: str) -> Outcome | None:
        body = self._read(model, _PROMOTIONS, proposal_id)
        return Outcome.from_json(body) if body is not None else None

    def history(self, model: str) -> list[dict[str, Any]]:
        """Every proposal of ``model``, oldest first, with its approval and outcome
        (None while there is none): who proposed and approved which version, when, and
        what production served from when on."""
        prefix = f"models/{model}/{_PROPOSALS}/"
        proposals = []
        for info in self.store.list(prefix):
            proposal = self.proposal(model, info.key[len(prefix) :].removesuffix(".json"))
            if proposal is not None:
                proposals.append(proposal)
        entries = []
        for proposal in sorted(proposals, key=lambda p: p.proposed_at):
            approval = self.approval(model, proposal.id)
            outcome = self.outcome(model, proposal.id)
            entries.append(
                {
                    "proposal": proposal.to_json(),
                    "approval": approval.to_json() if approval is not None else None,
                    "outcome": outcome.to_json() if outcome is not None else None,
                    "status": status(approval, outcome),
                }
            )
        return entries

    def _key(self, model: str, kind: str, proposal_id: str) -> str:
        if not proposal_id or "/" in proposal_id or proposal_id.startswith("."):
            raise ValueError(f"{proposal_id!r} is not a proposal id")
        return f"models/{model}/{kind}/{proposal_id}.json"

    def _create(self, model: str, kind: str, proposal_id: str, body: dict[str, Any]) -> None:
        self.store.write(
            self._key(model, kind, proposal_id),
            canonical_json(body),
            if_generation_match=0,
            content_type="application/json",
        )

    def _read(self, model: str, kind: str, proposal_id: str) -> dict[str, Any] | None:
        try:
            body: dict[str, Any] = orjson.loads(
                self.store.read(self._key(model, kind, proposal_id)).data
            )
        except NotFound:
            return None
        return body


def status(approval: Approval | None, outcome: Outcome | None) -> str:
    """``pending`` (no decision), ``approved`` (its rollout under way, or left by a
    process that died), or the outcome's ``succeeded`` / ``failed``."""
    if outcome is not None:
        return outcome.status
    return "approved" if approval is not None else "pending"
