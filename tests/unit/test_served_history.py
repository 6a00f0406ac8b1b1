"""Which version served where, from when to when (``domain.history``), and the card's
section that shows it (``card.served``): pure, on records written by hand."""

from __future__ import annotations

from typing import Any

from modelrail.domain import card
from modelrail.domain.history import (
    Move,
    Period,
    periods,
    production_moves,
    served,
    staging_moves,
    timeline,
)
from modelrail.domain.lineage import Lineage
from modelrail.domain.runs import RunSummary, StageRecord
from modelrail.service.rollback import staging_history

T = "2026-12-0{day}T10:00:00.000000Z"


def _at(day: int) -> str:
    return T.format(day=day)


def _run(run_id: str, stage: str, day: int, version: int, status: str = "succeeded") -> RunSummary:
    """A run whose ``stage`` (deploy or rollback) moved staging of penguins to
    ``version`` on ``day`` (or failed to)."""
    event = {"event_type": "model-deployed", "model": "penguins", "version": version}
    record = StageRecord(
        run_id, stage, status, _at(day), _at(day), 1.0,
        Lineage({"kind": "upload", "key": run_id}, {}), {},
        event if status == "succeeded" else None,
    )  # fmt: skip
    return RunSummary(run_id, {stage: record})


def _promotion(pid: str, version: int, day: int, status: str = "succeeded") -> dict[str, Any]:
    """A history entry (``Promotions.history``): ``version`` proposed by ana the day
    before ``day``, approved by bo, its outcome ``status`` on ``day``."""
    return {
        "proposal": {
            "id": pid, "model": "penguins", "version": version, "proposed_by": "ana",
            "reason": "better", "proposed_at": _at(day - 1), "production_version": None,
            "production_generation": 0, "staging_generation": None,
        },
        "approval": {"proposal": pid, "approved_by": "bo", "reason": "ok",
                     "approved_at": _at(day)},
        "outcome": {
            "proposal": pid, "status": status, "from_version": None, "to_version": version,
            "finished_at": _at(day), "revision": f"rev-{version}", "url": None,
            "detail": "" if status == "succeeded" else "breached at 10 %",
            "steps": [{"percent": 10.0, "started_at": _at(day), "ended_at": _at(day),
                       "new": {"requests": 40, "errors": 9, "p99_ms": 3.0},
                       "old": {"requests": 360, "errors": 0, "p99_ms": 2.0},
                       "predictions": {"psi": 0.012, "old_logged": 360, "new_logged": 40,
                                       "judged": False},
                       "breach": None if status == "succeeded" else "error rate 22.50%"}]
            + ([{"percent": 100.0, "started_at": _at(day)}] if status == "succeeded" else []),
        },
        "status": status,
    }  # fmt: skip


def test_a_production_period_runs_from_its_promotion_to_the_next_succeeded_one() -> None:
    history = [
        _promotion("p1", 1, 2),
        _promotion("p2", 2, 4, status="failed"),  # breached: production stayed on v1
        _promotion("p3", 3, 6),
        _promotion("p4", 1, 8),  # back to v1: a promotion of the older version
    ]

    found = periods(production_moves(history))

    assert [(p.version, p.since, p.until) for p in found] == [
        (1, _at(2), _at(6)),
        (3, _at(6), _at(8)),
        (1, _at(8), None),
    ]
    assert [p.source["proposal"]["id"] for p in found] == ["p1", "p3", "p4"]


def test_a_staging_period_runs_from_its_deploy_or_rollback_to_the_next_move() -> None:
    runs = [
        _run("run-b", "deploy", 3, 2),
        _run("run-a", "deploy", 1, 1),
        _run("run-c", "deploy", 4, 3, status="failed"),  # staging kept v2
        _run("run-d", "rollback", 5, 1),
    ]

    found = periods(staging_moves(runs, "penguins"))

    assert [(p.version, p.since, p.until, p.source) for p in found] == [
        (1, _at(1), _at(3), "run-a"),
        (2, _at(3), _at(5), "run-b"),
        (1, _at(5), None, "run-d"),
    ]
    assert staging_moves(runs, "another") == []
    assert staging_history(runs, "penguins") == [1, 2, 1]  # the rollback's reading


def test_each_service_has_its_own_periods_and_no_move_none() -> None:
    moves = [Move("staging", _at(1), 1), Move("production", _at(2), 1), Move("staging", _at(3), 2)]

    assert periods(moves) == [
        Period("staging", 1, _at(1), _at(3)),
        Period("production", 1, _at(2), None),
        Period("staging", 2, _at(3), None),
    ]
    assert periods([]) == []


def test_runs_and_promotions_are_listed_in_the_order_they_began() -> None:
    first, second = _run("run-a", "deploy", 1, 1), _run("run-b", "deploy", 4, 2)
    promotion = _promotion("p1", 1, 3)  # proposed on day 2

    assert timeline([first, second], [promotion]) == [first, promotion, second]


def test_the_card_shown_says_where_its_version_served_and_every_proposal_of_it() -> None:
    runs = [_run("run-a", "deploy", 1, 1), _run("run-b", "deploy", 5, 2)]
    history = [_promotion("p1", 1, 2), _promotion("p2", 2, 4, status="failed")]
    history = [{**entry, "steps": entry["outcome"]["steps"]} for entry in history]
    stored = b"<html><body><h1>penguins v1</h1></body></html>\n"

    all_periods = served(runs, history, "penguins")
    one = card.served(stored, 1, all_periods, history).decode()
    two = card.served(stored, 2, all_periods, history).decode()

    assert one.startswith('<html><body><h1>penguins v1</h1><section id="served">')
    assert one.endswith("</section>\n</body></html>\n")
    assert f"<td>staging</td><td>{_at(1)}</td><td>{_at(5)}</td><td>run <code>run-a" in one
    assert f"<td>production</td><td>{_at(2)}</td><td><b>still serving</b></td>" in one
    assert "promotion <code>p1</code>, proposed by ana, approved by bo" in one
    assert 'id="promotion-p1"' in one
    assert "p2" not in one
    assert "10 % of production's traffic" in one
    assert "100 % of" in one
    # v2 staged from day 5 and was never in production: its canary breached.
    assert f"<td>staging</td><td>{_at(5)}</td><td><b>still serving</b></td>" in two
    assert "<td>production</td>" not in two
    assert "<b>failed</b>" in two
    assert "breached at 10 %" in two
    assert "breach: error rate 22.50%" in two
    assert "predictions PSI 0.012 against the old revision's (40 and 360 logged, too few" in two
    nothing = card.served(stored, 3, all_periods, history).decode()
    assert "v3 has served neither staging nor production yet" in nothing
