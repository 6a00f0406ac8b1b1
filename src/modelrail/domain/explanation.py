"""A model's global explanation on its hold-out, for the model card: each feature's
mean absolute TreeSHAP contribution (LightGBM's ``pred_contrib``, as the service's
``/explain`` answers per instance) and dependence points for the top features.

TreeSHAP costs ~75 µs a row on the benchmark model, so a hold-out of millions of rows
is summarised on a uniform sample (``Sample``: a seeded reservoir of at most
``SAMPLE_ROWS`` rows, the same rows for the same data and seed).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from modelrail.domain.features import FeatureSchema

SAMPLE_ROWS = 2000
DEPENDENCE_FEATURES = 3
DEPENDENCE_POINTS = 200


class Sample:
    """A uniform sample of the rows added (Algorithm R, seeded), at most ``size``."""

    def __init__(self, seed: int, size: int = SAMPLE_ROWS) -> None:
        self._rng = np.random.default_rng(seed)
        self._size = size
        self._rows: np.ndarray | None = None
        self._kept = 0
        self.seen = 0

    def add(self, matrix: np.ndarray) -> None:
        if len(matrix) == 0:
            return
        if self._rows is None:
            self._rows = np.empty((self._size, matrix.shape[1]), dtype=np.float64)
        room = min(self._size - self._kept, len(matrix))
        self._rows[self._kept : self._kept + room] = matrix[:room]
        self._kept += room
        rest = matrix[room:]
        if len(rest):
            # Row number i (0-based, over every row added) replaces slot j < size with
            # j uniform in [0, i]; in order, so a later row wins a slot, as in the loop.
            numbers = np.arange(self.seen + room, self.seen + len(matrix))
            slots = self._rng.integers(0, numbers + 1)
            chosen = slots < self._size
            self._rows[slots[chosen]] = rest[chosen]
        self.seen += len(matrix)

    def rows(self) -> np.ndarray:
        return np.empty((0, 0)) if self._rows is None else self._rows[: self._kept]


def summarise(
    schema: FeatureSchema,
    matrix: np.ndarray,
    contribute: Callable[[np.ndarray], Any],
    hold_out_rows: int,
) -> dict[str, Any] | None:
    """The card's explanation of ``matrix`` (hold-out rows, as the model reads them);
    ``contribute`` is ``booster.predict(..., pred_contrib=True)``. None without rows."""
    if len(matrix) == 0:
        return None
    width = len(schema.features)
    flat = np.asarray(contribute(matrix), dtype=np.float64)
    outputs = flat.reshape(len(matrix), -1, width + 1)[:, :, :width]
    names = schema.names
    mean_abs = np.abs(outputs).mean(axis=0).sum(axis=0)
    # A multiclass row's dependence is its contribution to the class it is predicted.
    predicted = outputs.sum(axis=2).argmax(axis=1) if outputs.shape[1] > 1 else None
    points = np.unique(np.linspace(0, len(matrix) - 1, DEPENDENCE_POINTS).astype(int))
    dependence = []
    for position in np.argsort(-mean_abs, kind="stable")[:DEPENDENCE_FEATURES].tolist():
        feature = schema.features[position]
        values = matrix[points, position]
        per_row = (
            outputs[points, 0, position]
            if predicted is None
            else outputs[points, predicted[points], position]
        )
        dependence.append(
            {
                "feature": feature.name,
                "categorical": feature.is_categorical,
                "values": [
                    None
                    if math.isnan(value)
                    else (feature.categories[int(value)] if feature.is_categorical else value)
                    for value in values.tolist()
                ],
                "contributions": per_row.tolist(),
            }
        )
    return {
        "rows": len(matrix),
        "hold_out_rows": hold_out_rows,
        "units": "raw score"
        + (
            " (log-odds of the second class)"
            if schema.objective == "binary"
            else " (summed over the classes; dependence: the predicted class's)"
            if predicted is not None
            else ""
        ),
        "mean_abs_contribution": dict(zip(names, mean_abs.tolist(), strict=True)),
        "dependence": dependence,
    }
