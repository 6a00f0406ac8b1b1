"""A canary step's judgement (``domain.rollout``) and the policy's checks."""

from __future__ import annotations

import pytest

from modelrail.domain.rollout import CanaryPolicy, Shift, Window, breach

POLICY = CanaryPolicy(steps=(10.0, 100.0), max_error_rate_increase=0.01, max_p99_ratio=1.5)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (Window(100, 0, 10.0), Window(100, 1, 10.0), None),  # 1 % more: at the limit
        (Window(100, 0, 10.0), Window(100, 2, 10.0), "error rate 2.00% (2/100)"),
        (Window(100, 5, 10.0), Window(100, 5, 10.0), None),  # as bad as the old one
        (Window(100, 0, 10.0), Window(100, 0, 40.0), None),  # within 1.5 x + 25 ms
        (Window(100, 0, 10.0), Window(100, 0, 40.1), "p99 latency 40.1 ms"),
        (Window(100, 0, 10.0), Window(0, 0, None), "answered no request"),  # no evidence
    ],
)
def test_a_step_breaches_on_error_rate_or_p99_against_the_old_revision(
    old: Window, new: Window, expected: str | None
) -> None:
    found = breach(old, new, POLICY)
    if expected is None:
        assert found is None
    else:
        assert found is not None
        assert expected in found


@pytest.mark.parametrize(
    ("shift", "expected"),
    [
        (Shift(0.26, 200, 200), "predictions shifted from the old revision's by a PSI of 0.260"),
        (Shift(0.25, 200, 200), None),  # at the limit
        (Shift(0.9, 200, 199), None),  # too few logged by the new revision: not judged
        (Shift(None, 0, 0), None),  # nothing logged: judged on its answers alone
    ],
)
def test_a_step_breaches_on_predictions_shifted_from_the_old_revisions(
    shift: Shift, expected: str | None
) -> None:
    policy = CanaryPolicy(steps=(10.0, 100.0), max_prediction_psi=0.25, min_logged_predictions=200)
    healthy = Window(100, 0, 10.0)

    found = breach(healthy, healthy, policy, shift)

    assert found is None if expected is None else expected in (found or "")
    assert shift.to_json(policy)["judged"] is (shift.psi is not None and shift.new_logged >= 200)


@pytest.mark.parametrize(
    ("steps", "problem"),
    [((10.0, 50.0), "must end with 100"), ((50.0, 10.0, 100.0), "must rise"), ((100.0,), None)],
)
def test_the_steps_must_rise_to_100(steps: tuple[float, ...], problem: str | None) -> None:
    problems = CanaryPolicy(steps=steps).problems()
    assert (problem in problems[0]) if problem else not problems
