"""A canary rollout's policy and judgement, pure: the steps of traffic a new production
revision gets (``[production.canary]``), and whether what it answered at a step breaches
the thresholds against what the old revision answered meanwhile."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class CanaryPolicy:
    """``steps``: the percentages of traffic the new revision gets, in order, the last
    100. Each step but the last is held for ``hold_s`` seconds or until the new
    revision answered ``min_requests`` requests, whichever comes first, then judged:
    a breach is an error rate (5xx) more than ``max_error_rate_increase`` above the old
    revision's, a p99 latency above ``max_p99_ratio`` times the old one's plus
    ``p99_slack_ms`` (small latencies vary by more than any ratio), or, where both
    revisions log their predictions, the new one's predictions shifted from the old
    one's by a PSI above ``max_prediction_psi`` (judged once each logged
    ``min_logged_predictions`` instances in the step)."""

    steps: tuple[float, ...] = (100.0,)
    hold_s: float = 300.0
    min_requests: int = 200
    max_error_rate_increase: float = 0.01
    max_p99_ratio: float = 1.5
    p99_slack_ms: float = 25.0
    max_prediction_psi: float = 0.25
    min_logged_predictions: int = 200

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any]) -> CanaryPolicy:
        defaults = cls()
        return cls(
            steps=tuple(float(step) for step in spec.get("steps", defaults.steps)),
            hold_s=float(spec.get("hold_seconds", defaults.hold_s)),
            min_requests=int(spec.get("min_requests", defaults.min_requests)),
            max_error_rate_increase=float(
                spec.get("max_error_rate_increase", defaults.max_error_rate_increase)
            ),
            max_p99_ratio=float(spec.get("max_p99_ratio", defaults.max_p99_ratio)),
            p99_slack_ms=float(spec.get("p99_slack_ms", defaults.p99_slack_ms)),
            max_prediction_psi=float(spec.get("max_prediction_psi", defaults.max_prediction_psi)),
            min_logged_predictions=int(
                spec.get("min_logged_predictions", defaults.min_logged_predictions)
            ),
        )

    def problems(self) -> list[str]:
        """What makes the steps unusable (they must rise to exactly 100)."""
        steps = self.steps
        if not steps or steps[-1] != 100.0:
            return ["[production.canary] steps must end with 100"]
        if any(not 0 < step <= 100 for step in steps) or list(steps) != sorted(set(steps)):
            return ["[production.canary] steps must rise, each above 0 and at most 100"]
        return []


@dataclasses.dataclass(frozen=True)
class Window:
    """What one revision answered during a step."""

    requests: int
    errors: int
    p99_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @classmethod
    def from_json(cls, body: Mapping[str, Any] | None) -> Window:
        body = body or {}
        return cls(int(body.get("requests", 0)), int(body.get("errors", 0)), body.get("p99_ms"))

    def to_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 6),
            "p99_ms": self.p99_ms,
        }


@dataclasses.dataclass(frozen=True)
class Shift:
    """How the new revision's predictions differ from the old one's over a step, from
    the prediction log: the PSI of the new one's in the old version's training-target
    bins (None when either logged no answer), and how many instances each logged."""

    psi: float | None
    old_logged: int
    new_logged: int

    def judged(self, policy: CanaryPolicy) -> bool:
        return self.psi is not None and min(self.old_logged, self.new_logged) >= (
            policy.min_logged_predictions
        )

    def to_json(self, policy: CanaryPolicy) -> dict[str, Any]:
        return {
            "psi": None if self.psi is None else round(self.psi, 4),
            "old_logged": self.old_logged,
            "new_logged": self.new_logged,
            "judged": self.judged(policy),
        }


def describe_step(step: Mapping[str, Any]) -> str:
    """What a recorded step's revisions answered and, where they log it, how their
    predictions compared, as a person reads it ("" for a step not judged: the last)."""
    parts = []
    if "new" in step:
        new, old = step["new"], step["old"]
        parts.append(
            f"new {new['errors']}/{new['requests']} errors, p99 {new['p99_ms']} ms; "
            f"old {old['errors']}/{old['requests']} errors, p99 {old['p99_ms']} ms"
        )
    recorded = step.get("predictions")
    if recorded is not None and "unread" in recorded:
        parts.append(f"predictions not compared: {recorded['unread']}")
    elif recorded is not None and recorded["psi"] is not None:
        judged = "" if recorded["judged"] else ", too few to judge"
        parts.append(
            f"predictions PSI {recorded['psi']} against the old revision's "
            f"({recorded['new_logged']} and {recorded['old_logged']} logged{judged})"
        )
    return "; ".join(parts)


def breach(
    old: Window, new: Window, policy: CanaryPolicy, shift: Shift | None = None
) -> str | None:
    """Why ``new`` breaches the policy against ``old``, with the numbers; None if not.
    A step is judged when its hold ends: a new revision that answered nothing by then
    gave nothing to judge it on, and no step goes on without evidence. The predictions'
    ``shift`` is judged only on enough logged instances (the log is sampled, and may
    be off: then the step is judged on its answers alone)."""
    if new.requests == 0:
        return (
            "the new revision answered no request in the step: nothing to judge it on "
            "(hold steps longer, give them more traffic, or set steps = [100])"
        )
    increase = new.error_rate - old.error_rate
    if increase > policy.max_error_rate_increase:
        return (
            f"error rate {new.error_rate:.2%} ({new.errors}/{new.requests}) against the old "
            f"revision's {old.error_rate:.2%} ({old.errors}/{old.requests}): more than "
            f"{policy.max_error_rate_increase:.2%} above it"
        )
    if new.p99_ms is not None and old.p99_ms is not None:
        limit = old.p99_ms * policy.max_p99_ratio + policy.p99_slack_ms
        if new.p99_ms > limit:
            return (
                f"p99 latency {new.p99_ms:.1f} ms against the old revision's "
                f"{old.p99_ms:.1f} ms: above {limit:.1f} ms "
                f"({policy.max_p99_ratio:g}x + {policy.p99_slack_ms:g} ms)"
            )
    psi = shift.psi if shift is not None and shift.judged(policy) else None
    if shift is not None and psi is not None and psi > policy.max_prediction_psi:
        return (
            f"predictions shifted from the old revision's by a PSI of {psi:.3f} "
            f"(over {shift.new_logged} and {shift.old_logged} logged instances): above "
            f"{policy.max_prediction_psi:g}"
        )
    return None
