"""Production's history as the CLI prints it: one promotion in full (``modelrail
promotions``, ``rollout status``, ``runs PROPOSAL``) or as an entry of ``modelrail runs``
among the runs, each from a ``service.history.promotions`` entry."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelrail.domain.rollout import describe_step


def short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def promotion_text(entry: Mapping[str, Any]) -> str:
    """Who proposed and approved it, why, and what production did."""
    proposal, approval, outcome = entry["proposal"], entry["approval"], entry["outcome"]
    lines = [
        f"{proposal['id']}  v{proposal['version']}  {entry['status']}\n"
        f"  proposed by {proposal['proposed_by']} at {proposal['proposed_at']}: "
        f"{short(proposal['reason'])}"
    ]
    if approval is not None:
        lines.append(
            f"  approved by {approval['approved_by']} at {approval['approved_at']}: "
            f"{short(approval['reason'])}"
        )
    lines.extend(_outcome_lines(outcome, "  "))
    return "\n".join(lines)


def promotion_in_full(entry: Mapping[str, Any]) -> str:
    """``promotion_text`` and each step its rollout took, with its numbers."""
    return "\n".join([promotion_text(entry), *(step_text(step) for step in entry["steps"])])


def promotion_listed(entry: Mapping[str, Any]) -> str:
    """The promotion as ``modelrail runs`` lists it among the runs: when it was proposed,
    production's move, who proposed and approved it, each step and what came of it."""
    proposal, approval = entry["proposal"], entry["approval"]
    before = proposal["production_version"]
    who = f"proposed by {proposal['proposed_by']}" + (
        f", approved by {approval['approved_by']}" if approval is not None else ""
    )
    lines = [
        f"{proposal['id']}  {proposal['proposed_at']}  {entry['model']}  "
        f"{entry['status']:<11} promotion: {f'v{before}' if before else 'nothing'} → "
        f"v{proposal['version']}, {who}",
        *(step_text(step) for step in entry["steps"]),
        *_outcome_lines(entry["outcome"], "    "),
    ]
    return "\n".join(lines)


def _outcome_lines(outcome: Mapping[str, Any] | None, indent: str) -> list[str]:
    if outcome is None:
        return []
    if outcome["status"] == "succeeded":
        return [
            f"{indent}production serves v{outcome['to_version']} from {outcome['finished_at']} "
            f"({outcome['revision']})"
        ]
    return [f"{indent}failed at {outcome['finished_at']}: {short(outcome['detail'])}"]


def step_text(step: Mapping[str, Any]) -> str:
    """A rollout step: its share of the traffic, from when, what the new and the old
    revision answered (and, where they log it, how their predictions compare), and its
    breach."""
    text = f"    {step['percent']:g} % from {step['started_at']}"
    answered = describe_step(step)
    if answered:
        text += f": {short(answered, 300)}"
    if step.get("breach"):
        text += f"\n      BREACH: {step['breach']}"
    return text
