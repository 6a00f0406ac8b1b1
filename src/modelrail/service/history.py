"""A model's history as people read it (``modelrail runs``, ``promotions``, ``card``, the
UI): its promotions with their rollouts' steps, and the periods each version served on
staging and production (``domain.history``), read from the records when asked."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from modelrail.domain import history
from modelrail.domain.promotion import Promotions
from modelrail.service.container import Container


def promotions(container: Container, model: str) -> list[dict[str, Any]]:
    """Every proposal of ``model``, oldest first (``Promotions.history``), each with its
    model and its rollout's steps: the outcome's, or those taken so far while it runs."""
    records = Promotions(container.artifacts)
    return [
        {
            **entry,
            "model": model,
            "steps": (
                entry["outcome"]["steps"]
                if entry["outcome"] is not None
                else records.steps(model, entry["proposal"]["id"])
            ),
        }
        for entry in records.history(model)
    ]


def promotion(
    container: Container, models: Iterable[str], proposal_id: str
) -> dict[str, Any] | None:
    """The proposal ``proposal_id`` of one of ``models``, as ``promotions`` gives it;
    None when none of them has it."""
    for model in models:
        try:
            proposal = Promotions(container.artifacts).proposal(model, proposal_id)
        except ValueError:  # not a proposal id at all
            return None
        if proposal is not None:
            return next(
                e for e in promotions(container, model) if e["proposal"]["id"] == proposal_id
            )
    return None


def served(container: Container, model: str) -> list[history.Period]:
    """Every period of ``model``'s staging and production, oldest first."""
    return history.served(
        container.runs.runs(model), Promotions(container.artifacts).history(model), model
    )
