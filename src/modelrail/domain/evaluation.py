"""Hold-out metrics, the TFX-style gate, and when the champion moves.

Value thresholds (``min``/``max``) judge every candidate; change thresholds
(``max_change_abs``/``max_change_rel``) compare it with the champion scored on the
same hold-out. The first model has no champion and is judged on values alone. The
verdict lists every check with its numbers, so a rejection explains itself.

The change thresholds are a tolerance: a candidate a little worse than the champion
is still blessed (registered, and deployed to staging unless ``[gate] staging`` says
"champion"). It does not become the champion: ``at_least_as_good`` asks whether it is
at least as good as the champion on every gated metric, and only then does the
champion move, so later candidates are always judged against the best model the gate
has seen, never against one that crept down a tolerance at a time.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from modelrail.domain.config import MetricGate
from modelrail.kernel.errors import ConfigError

_EPS = 1e-15


def metrics(objective: str, y_true: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """Metrics for ``objective`` from LightGBM's raw ``predict`` output."""
    if objective == "regression":
        error = prediction - y_true
        total = float(np.sum((y_true - y_true.mean()) ** 2))
        return {
            "rmse": float(np.sqrt(np.mean(error**2))),
            "mae": float(np.mean(np.abs(error))),
            "r2": 1.0 - float(np.sum(error**2)) / total if total > 0 else 0.0,
        }
    if objective == "binary":
        p = np.clip(prediction, _EPS, 1 - _EPS)
        return {
            "auc": _auc(y_true, p),
            "binary_logloss": float(-np.mean(y_true * np.log(p) + (1 - y_true) * np.log(1 - p))),
            "accuracy": float(np.mean((p >= 0.5) == (y_true == 1))),
        }
    probabilities = np.clip(prediction, _EPS, 1.0)
    labels = y_true.astype(int)
    predicted = probabilities.argmax(axis=1)
    return {
        "multi_logloss": float(-np.mean(np.log(probabilities[np.arange(len(labels)), labels]))),
        "accuracy": float(np.mean(predicted == labels)),
        "macro_f1": _macro_f1(labels, predicted, probabilities.shape[1]),
    }


RESIDUAL_POINTS = 400  # enough to see a pattern in the card's plot, small in a manifest


def diagnostics(
    objective: str, y_true: np.ndarray, prediction: np.ndarray, classes: Sequence[str]
) -> dict[str, Any]:
    """What the model card shows beyond the gated metrics: per-class precision, recall,
    F1 and support with the confusion matrix (classification), or predicted against
    actual values for a residual plot (regression, at most ``RESIDUAL_POINTS`` rows,
    evenly spaced)."""
    if objective == "regression":
        rows = np.unique(np.linspace(0, len(y_true) - 1, RESIDUAL_POINTS).astype(int))
        return {
            "actual": [float(v) for v in y_true[rows]],
            "predicted": [float(v) for v in prediction[rows]],
        }
    labels = y_true.astype(int)
    predicted = (prediction >= 0.5).astype(int) if objective == "binary" else prediction.argmax(1)
    size = len(classes)
    confusion = np.zeros((size, size), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    per_class = {}
    for k, name in enumerate(classes):
        tp = int(confusion[k, k])
        precision = tp / confusion[:, k].sum() if confusion[:, k].sum() else 0.0
        recall = tp / confusion[k].sum() if confusion[k].sum() else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "precision": float(precision),
            "recall": float(recall),
            "f1": float(f1),
            "support": int(confusion[k].sum()),
        }
    return {"classes": list(classes), "confusion": confusion.tolist(), "per_class": per_class}


def _auc(y_true: np.ndarray, score: np.ndarray) -> float:
    positives = y_true == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return 0.5
    # Imported here: scipy.stats costs seconds to import, and only the binary AUC uses it.
    from scipy.stats import rankdata

    ranks = rankdata(score)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def _macro_f1(labels: np.ndarray, predicted: np.ndarray, classes: int) -> float:
    scores = []
    for k in range(classes):
        tp = np.sum((predicted == k) & (labels == k))
        fp = np.sum((predicted == k) & (labels != k))
        fn = np.sum((predicted != k) & (labels == k))
        denominator = 2 * tp + fp + fn
        scores.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores))


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One gated metric of the candidate beside the champion's, on one data set."""

    metric: str
    direction: str  # higher | lower: which way is better
    value: float
    champion_value: float

    @property
    def at_least_as_good(self) -> bool:
        if self.direction == "higher":
            return self.value >= self.champion_value
        return self.value <= self.champion_value

    @property
    def text(self) -> str:
        relation = "at least as good as" if self.at_least_as_good else "worse than"
        return (
            f"{self.metric}={self.value:.4f} {relation} the champion's "
            f"{self.champion_value:.4f} ({self.direction} is better)"
        )


def compare(
    gates: Sequence[MetricGate],
    candidate: Mapping[str, float],
    champion: Mapping[str, float],
) -> tuple[Comparison, ...]:
    """Each gated metric of ``candidate`` beside ``champion``'s, on one data set."""
    return tuple(
        Comparison(gate.name, gate.direction, candidate[gate.name], champion[gate.name])
        for gate in gates
        if gate.name in candidate and gate.name in champion
    )


@dataclasses.dataclass(frozen=True)
class Check:
    metric: str
    kind: str  # min | max | max_change_abs | max_change_rel
    value: float
    threshold: float
    passed: bool
    champion_value: float | None = None

    @property
    def reason(self) -> str:
        verdict = "passes" if self.passed else "fails"
        if self.champion_value is None:
            return f"{self.metric}={self.value:.4f} {verdict} {self.kind} {self.threshold}"
        return (
            f"{self.metric}={self.value:.4f} vs champion {self.champion_value:.4f} "
            f"{verdict} {self.kind} {self.threshold}"
        )


@dataclasses.dataclass(frozen=True)
class Verdict:
    blessed: bool
    checks: tuple[Check, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "blessed": self.blessed,
            "checks": [{**dataclasses.asdict(c), "reason": c.reason} for c in self.checks],
            "reasons": [c.reason for c in self.checks if not c.passed],
        }


def judge(
    gates: Sequence[MetricGate],
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
) -> Verdict:
    checks: list[Check] = []
    for gate in gates:
        if gate.name not in candidate:
            raise ConfigError(
                f"gate metric {gate.name!r} is not computed for this objective "
                f"(available: {sorted(candidate)})"
            )
        value = candidate[gate.name]
        if gate.min is not None:
            checks.append(Check(gate.name, "min", value, gate.min, value >= gate.min))
        if gate.max is not None:
            checks.append(Check(gate.name, "max", value, gate.max, value <= gate.max))
        if champion is None or gate.name not in champion:
            continue
        best = champion[gate.name]
        # How much worse the candidate is, in the metric's own direction (<= 0: not worse).
        worsening = best - value if gate.direction == "higher" else value - best
        if gate.max_change_abs is not None:
            checks.append(
                Check(
                    gate.name,
                    "max_change_abs",
                    value,
                    gate.max_change_abs,
                    worsening <= gate.max_change_abs,
                    best,
                )
            )
        if gate.max_change_rel is not None:
            relative = worsening / max(abs(best), _EPS)
            checks.append(
                Check(
                    gate.name,
                    "max_change_rel",
                    value,
                    gate.max_change_rel,
                    relative <= gate.max_change_rel,
                    best,
                )
            )
    return Verdict(all(c.passed for c in checks), tuple(checks))
