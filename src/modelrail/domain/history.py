"""What happened to a model's services, pure: which version served where, from when to
when (staging's and production's periods, derived from the records that moved them),
and the runs and promotions in one timeline.

Staging moves with each successful deploy and rollback of a run (the ``model-deployed``
event its record published, at the record's ``finished_at``); production moves only by
a succeeded promotion (``domain.promotion``: its outcome's ``finished_at``, the moment
its alias moved). Production has no rollback of its own: going back is a promotion of
the older version, so it too starts a period. A period ends where the next move of
the same service begins; the last one has no end (it still serves).

Nothing here is stored: a period's end is only known once the next move happened, so
the periods are computed whenever they are shown (a version's card where it is shown:
``card.served``), never written into a version's immutable files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from modelrail.domain.promotion import PRODUCTION
from modelrail.domain.runs import RunSummary

STAGING = "staging"
# The stages whose success moves staging: the pipeline's deploy and an operator's rollback.
_STAGING_STAGES = ("deploy", "rollback")
_DEPLOYED = "model-deployed"


@dataclasses.dataclass(frozen=True)
class Move:
    """``version`` began serving on ``service`` at ``at``; ``source`` is what moved it:
    the run's id (staging) or the promotion's history entry (production)."""

    service: str
    at: str
    version: int
    source: Any = None


@dataclasses.dataclass(frozen=True)
class Period:
    """``version`` served on ``service`` from ``since`` until ``until`` (None: it still
    does); ``source`` as the ``Move`` that began it."""

    service: str
    version: int
    since: str
    until: str | None
    source: Any = None

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "version": self.version,
            "since": self.since,
            "until": self.until,
            **(
                {"proposal": self.source["proposal"]["id"]}
                if isinstance(self.source, Mapping)
                else {"run_id": self.source}
            ),
        }


def staging_moves(runs: Iterable[RunSummary], model: str) -> list[Move]:
    """Every time staging of ``model`` was moved, oldest first: each successful deploy
    and rollback that published ``model-deployed``."""
    moves = []
    for run in runs:
        for name in _STAGING_STAGES:
            record = run.stages.get(name)
            if record is None or record.status != "succeeded":
                continue
            event = record.event or {}
            if event.get("event_type") == _DEPLOYED and event.get("model") == model:
                moves.append(Move(STAGING, record.finished_at, int(event["version"]), run.run_id))
    return sorted(moves, key=lambda move: move.at)


def production_moves(history: Iterable[Mapping[str, Any]]) -> list[Move]:
    """Every time production was moved, oldest first: each succeeded promotion of a
    model's history (``Promotions.history``), at its outcome's ``finished_at``."""
    moves = [
        Move(
            PRODUCTION, entry["outcome"]["finished_at"], int(entry["outcome"]["to_version"]), entry
        )
        for entry in history
        if entry.get("outcome") is not None and entry["outcome"]["status"] == "succeeded"
    ]
    return sorted(moves, key=lambda move: move.at)


def periods(moves: Sequence[Move]) -> list[Period]:
    """The periods ``moves`` make, each service's own: each move's version serves from
    its ``at`` until the same service's next move (or still, after the last)."""
    result: list[Period] = []
    for service in dict.fromkeys(move.service for move in moves):
        ordered = sorted((move for move in moves if move.service == service), key=lambda m: m.at)
        ends: list[str | None] = [move.at for move in ordered[1:]]
        result.extend(
            Period(service, move.version, move.at, until, move.source)
            for move, until in zip(ordered, [*ends, None], strict=True)
        )
    return sorted(result, key=lambda period: period.since)


def served(
    runs: Iterable[RunSummary], history: Iterable[Mapping[str, Any]], model: str
) -> list[Period]:
    """Every period of staging and production of ``model``, oldest first."""
    return periods([*staging_moves(runs, model), *production_moves(history)])


def of_version(all_periods: Iterable[Period], version: int) -> list[Period]:
    """The periods ``version`` served, oldest first."""
    return [period for period in all_periods if period.version == version]


def timeline(
    runs: Iterable[RunSummary], promotions: Iterable[Mapping[str, Any]]
) -> list[RunSummary | Mapping[str, Any]]:
    """Runs and promotions (history entries) in the order they began: a run at its
    first stage's start, a promotion when it was proposed."""

    def began(item: RunSummary | Mapping[str, Any]) -> str:
        return item.started_at if isinstance(item, RunSummary) else item["proposal"]["proposed_at"]

    return sorted([*runs, *promotions], key=began)
