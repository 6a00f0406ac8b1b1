"""Monitoring: what a served version is asked, against what it was trained on.

Over a window of the prediction log (``serving.prediction_log``: the sampled requests
of one version, their feature vectors as the model read them and their answers), a
``Tally`` adds up, in bounded memory, per feature the requests' values in the bins of
the version's training profile (``versions/<N>/profile.json``: the deciles of a number,
the shares of a category), the values outside the contract's range and the categories
the version does not know; the predictions in the bins of the training target's
profile (for a classifier, the share of each predicted label against each class's
share of the training data); and the volume, answered and refused.

``report`` then measures each distribution's shift by the Population Stability Index,
exactly as validate measures an upload's (``dataset.profile.psi``, the same bins and
the same ``[drift]`` limits: below ``warn`` stable, above ``fail`` drifted), and names
the features that drifted. An unseen category is a bin of its own, which the training
data never filled. A window with fewer instances than ``MIN_INSTANCES`` is reported
but judged on nothing: a few dozen rows move a PSI by chance.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelrail.domain.dataset import profile
from modelrail.domain.features import Feature, FeatureSchema

# Below this many logged instances a window's shares are too noisy to judge: at 500,
# one decile bin's share moves by about 0.013 by chance (its binomial standard error),
# a PSI contribution far below the warning level.
MIN_INSTANCES = 500
UNSEEN = "(unseen)"


@dataclasses.dataclass
class _Feature:
    """One feature's values in a window: bin counts (numbers) or counts by category
    index (categories, booleans), missing and out-of-range counts."""

    counts: np.ndarray
    missing: int = 0
    unseen: int = 0
    out_of_range: int = 0


class Tally:
    """A window of one version's log, added up line by line (``add``)."""

    def __init__(self, schema: FeatureSchema, baseline: Mapping[str, Any]) -> None:
        self.schema, self.baseline = schema, baseline["columns"]
        self.requests = self.instances = 0
        self.refused: dict[str, int] = {}
        self.skipped = 0  # lines that are not a record of this version's log
        self.first: str | None = None
        self.last: str | None = None
        # A number's counts are per bin of its profile; a category's (a boolean's) per
        # index into its categories (false, true).
        self._edges = [self._numeric_edges(f.name) for f in schema.features]
        self._features = [
            _Feature(np.zeros(_bins(feature, edges), dtype=np.int64))
            for feature, edges in zip(schema.features, self._edges, strict=True)
        ]
        target = self.baseline.get(schema.target)
        self._target_edges = (
            np.asarray(target["edges"], dtype=np.float64)
            if target is not None and target["kind"] == "numeric"
            else None
        )
        self._predicted: dict[str, int] = {}
        self._predicted_bins = (
            np.zeros(len(self._target_edges) + 1, dtype=np.int64)
            if self._target_edges is not None
            else None
        )
        self._predicted_missing = 0

    def _numeric_edges(self, name: str) -> np.ndarray | None:
        column = self.baseline.get(name)
        if column is None or column["kind"] != "numeric":
            return None
        return np.asarray(column["edges"], dtype=np.float64)

    def add(self, line: Mapping[str, Any]) -> None:
        """One line of the log: an answered request or a refused one."""
        status = line.get("status")
        if status == 200 and isinstance(line.get("instances"), list):
            counted = self._answered(line)
        elif isinstance(status, int) and isinstance(line.get("problem"), str):
            self.refused[line["problem"]] = self.refused.get(line["problem"], 0) + 1
            counted = True
        else:
            counted = False
        if not counted:
            self.skipped += 1
            return
        self.requests += 1
        at = str(line.get("time", ""))
        self.first = at if self.first is None or at < self.first else self.first
        self.last = at if self.last is None or at > self.last else self.last

    def _answered(self, line: Mapping[str, Any]) -> bool:
        """Add an answered request's instances; False for a line of another schema."""
        width = len(self.schema.features)
        rows = [row for row in line["instances"] if isinstance(row, list) and len(row) == width]
        if len(rows) != len(line["instances"]):
            return False
        matrix = np.array(
            [[math.nan if value is None else value for value in row] for row in rows],
            dtype=np.float64,
        ).reshape(len(rows), width)
        self._instances(matrix, line.get("unseen") or {})
        self._predictions(line.get("predictions"), len(rows))
        return True

    def add_scored(self, matrix: np.ndarray, predicted: np.ndarray) -> None:
        """Instances scored outside the service (batch prediction): ``matrix`` as the
        model read them, ``predicted`` the regression values or, for a classifier, each
        row's class index (into the schema's classes)."""
        self._instances(matrix, {})
        if self._predicted_bins is not None and self._target_edges is not None:
            self._predicted_bins += profile.bin_counts(self._target_edges, predicted)
            return
        counts = np.bincount(predicted.astype(np.int64), minlength=len(self.schema.classes))
        for label, count in zip(self.schema.classes, counts.tolist(), strict=True):
            if count:
                self._predicted[label] = self._predicted.get(label, 0) + count

    def state(self) -> dict[str, Any]:
        """What the tally has added up, as JSON: another tally of the same version
        adds it with ``absorb`` (the tasks of one batch prediction, each its share)."""
        return {
            "instances": self.instances,
            "features": [
                {
                    "counts": f.counts.tolist(),
                    "missing": f.missing,
                    "unseen": f.unseen,
                    "out_of_range": f.out_of_range,
                }
                for f in self._features
            ],
            "predicted": dict(self._predicted),
            "predicted_bins": None
            if self._predicted_bins is None
            else self._predicted_bins.tolist(),
            "predicted_missing": self._predicted_missing,
        }

    def absorb(self, state: Mapping[str, Any]) -> None:
        """Add another tally's ``state`` (of the same version) to this one."""
        self.instances += int(state["instances"])
        for tally, other in zip(self._features, state["features"], strict=True):
            tally.counts += np.asarray(other["counts"], dtype=np.int64)
            tally.missing += int(other["missing"])
            tally.unseen += int(other["unseen"])
            tally.out_of_range += int(other["out_of_range"])
        for label, count in state["predicted"].items():
            self._predicted[label] = self._predicted.get(label, 0) + int(count)
        if self._predicted_bins is not None and state["predicted_bins"] is not None:
            self._predicted_bins += np.asarray(state["predicted_bins"], dtype=np.int64)
        self._predicted_missing += int(state["predicted_missing"])

    def _instances(self, matrix: np.ndarray, unseen: Mapping[str, Any]) -> None:
        """Add each feature's values of ``matrix`` (one row per instance)."""
        self.instances += len(matrix)
        for column, (feature, tally, edges) in enumerate(
            zip(self.schema.features, self._features, self._edges, strict=True)
        ):
            values = matrix[:, column]
            present = values[~np.isnan(values)]
            unseen_here = int(unseen.get(feature.name, 0))
            tally.unseen += unseen_here
            tally.missing += len(values) - len(present) - unseen_here
            if edges is not None:
                tally.counts += profile.bin_counts(edges, present)
                low = -math.inf if feature.min is None else feature.min
                high = math.inf if feature.max is None else feature.max
                tally.out_of_range += int(np.count_nonzero((present < low) | (present > high)))
            else:
                codes = present.astype(np.int64)
                codes = codes[(codes >= 0) & (codes < len(tally.counts))]
                tally.counts += np.bincount(codes, minlength=len(tally.counts))

    def _predictions(self, predictions: Any, rows: int) -> None:
        if not isinstance(predictions, list) or len(predictions) != rows:
            self._predicted_missing += rows
            return
        if self._predicted_bins is not None and self._target_edges is not None:
            values = np.array(
                [p if isinstance(p, int | float) else math.nan for p in predictions],
                dtype=np.float64,
            )
            present = values[~np.isnan(values)]
            self._predicted_missing += len(values) - len(present)
            self._predicted_bins += profile.bin_counts(self._target_edges, present)
            return
        for answer in predictions:
            label = answer.get("label") if isinstance(answer, dict) else None
            if isinstance(label, str):
                self._predicted[label] = self._predicted.get(label, 0) + 1
            else:
                self._predicted_missing += 1

    def current(self) -> dict[str, dict[str, Any]]:
        """Each feature's distribution in the window, in its training profile's form."""
        distributions = {}
        for feature, tally, edges in zip(
            self.schema.features, self._features, self._edges, strict=True
        ):
            if feature.name not in self.baseline:
                continue
            if edges is not None:
                distributions[feature.name] = profile.rebinned(
                    self.baseline[feature.name],
                    self.instances,
                    self.instances - tally.missing - tally.unseen,
                    tally.counts.tolist(),
                )
                continue
            names = (
                feature.categories
                if feature.is_categorical
                else ("false", "true")  # a boolean's profile names its values so
            )
            named = {name: int(count) for name, count in zip(names, tally.counts, strict=True)}
            if tally.unseen:
                named[UNSEEN] = tally.unseen
            distributions[feature.name] = profile.categorical(self.instances, named)
        return distributions

    def predicted(self) -> dict[str, Any] | None:
        """The predictions' distribution in the training target's profile form."""
        target = self.baseline.get(self.schema.target)
        answered = self.instances
        if target is None or not answered:
            return None
        if self._predicted_bins is not None:
            present = answered - self._predicted_missing
            return profile.rebinned(target, answered, present, self._predicted_bins.tolist())
        return profile.categorical(answered, self._predicted)

    def feature(self, name: str) -> _Feature:
        return self._features[self.schema.names.index(name)]


def report(
    tally: Tally,
    limits: Mapping[str, tuple[float, float]],
    default: tuple[float, float],
    *,
    model: str,
    version: int,
    window: Mapping[str, str],
) -> dict[str, Any]:
    """The window's monitoring report: volume, per feature its PSI against the training
    profile with its status, its out-of-range and unseen rates, the predictions' PSI
    against the training target, and the features that drifted (``fail``)."""
    judged = tally.instances >= MIN_INSTANCES
    unjudged = "too few" if tally.instances else "no data"
    features = []
    for name, now in tally.current().items():
        warn, fail = limits.get(name, default)
        counted = tally.feature(name)
        total = max(tally.instances, 1)
        # No instance, no distribution: a PSI of all-empty bins would be a large number
        # that says nothing.
        index = profile.psi(tally.baseline[name], now) if tally.instances else None
        features.append(
            {
                "feature": name,
                "psi": None if index is None else round(index, 4),
                "warn": warn,
                "fail": fail,
                "status": _status(index, warn, fail) if judged and index is not None else unjudged,
                "missing": round(counted.missing / total, 4),
                "out_of_range": round(counted.out_of_range / total, 4),
                "unseen": round(counted.unseen / total, 4),
            }
        )
    predicted = tally.predicted()
    predictions = None
    if predicted is not None:
        index = profile.psi(tally.baseline[tally.schema.target], predicted)
        warn, fail = default
        predictions = {
            "psi": round(index, 4),
            "status": _status(index, warn, fail) if judged else "too few",
            "distribution": predicted,
        }
    return {
        "model": model,
        "version": version,
        "window": dict(window),
        "logged": {"first": tally.first, "last": tally.last},
        "requests": tally.requests,
        "instances": tally.instances,
        "refused": dict(sorted(tally.refused.items())),
        "skipped_lines": tally.skipped,
        "judged": judged,
        "min_instances": MIN_INSTANCES,
        "features": features,
        "predictions": predictions,
        "drifted": [f["feature"] for f in features if f["status"] == "fail"],
    }


def _bins(feature: Feature, edges: np.ndarray | None) -> int:
    if edges is not None:
        return len(edges) + 1
    return len(feature.categories) if feature.is_categorical else 2


def _status(index: float, warn: float, fail: float) -> str:
    return "fail" if index > fail else "warn" if index > warn else "ok"
