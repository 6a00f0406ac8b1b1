"""The monitor's tally of a prediction log against a version's training profile: the
same bins and PSI as validate's drift, unseen categories a bin of their own, values
beyond the range counted, lines that are not this version's skipped and counted, and
nothing judged on too few instances."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pyarrow as pa

from modelrail.domain import monitoring
from modelrail.domain.dataset import profile
from modelrail.domain.features import Feature, FeatureSchema

SCHEMA = FeatureSchema(
    objective="regression",
    features=(
        Feature("x", "number", True, min=0.0, max=10.0),
        Feature("colour", "category", True, categories=("red", "blue")),
        Feature("flag", "boolean", False),
    ),
    target="y",
    classes=(),
)
LIMITS = (0.1, 0.25)


def _training(rows: int, seed: int) -> dict[str, Any]:
    """A training profile as validate writes it, and the rows it was made from."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, rows)
    colour = rng.choice(["red", "blue"], rows)
    flag = rng.integers(0, 2, rows).astype(bool)
    y = 2 * x + rng.normal(0, 1, rows)
    # As the snapshot holds them: a category dictionary-encoded, a boolean as 0/1.
    colours = pa.array(colour).dictionary_encode()
    flags = pa.array(flag.astype(np.float64))
    columns = {
        "x": profile._numeric(x),
        "colour": profile.categorical(rows, profile.value_counts(colours)),
        "flag": profile.categorical(rows, profile.value_counts(flags)),
        "y": profile._numeric(y),
    }
    return {"rows": rows, "columns": columns}


def _line(rows: list[list[float | None]], predictions: list[float], **more: Any) -> dict[str, Any]:
    return {
        "time": "2026-12-06T10:00:00.000000Z",
        "request_id": "r",
        "status": 200,
        "instances": rows,
        "predictions": predictions,
        **more,
    }


def _requests(seed: int, count: int, shift: float = 0.0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    lines = []
    for _ in range(count):
        x = rng.uniform(0, 10, 10) + shift
        rows = [[float(v), float(rng.integers(0, 2)), float(rng.integers(0, 2))] for v in x]
        lines.append(_line(rows, [float(2 * v) for v in x]))
    return lines


def _report(tally: monitoring.Tally) -> dict[str, Any]:
    return monitoring.report(
        tally, {}, LIMITS, model="m", version=1, window={"from": "a", "to": "b"}
    )


def test_requests_like_the_training_data_do_not_drift_and_a_shift_does() -> None:
    baseline = _training(5_000, seed=1)
    same, shifted = monitoring.Tally(SCHEMA, baseline), monitoring.Tally(SCHEMA, baseline)
    for line in _requests(2, 100):
        same.add(line)
    for line in _requests(3, 100, shift=4.0):
        shifted.add(line)

    calm, moved = _report(same), _report(shifted)

    assert calm["drifted"] == []
    assert moved["drifted"] == ["x"]
    x = {row["feature"]: row for row in moved["features"]}["x"]
    # The PSI is validate's, of the values in the training profile's bins.
    values = np.array(
        [row[0] for line in _requests(3, 100, shift=4.0) for row in line["instances"]]
    )
    expected = profile.psi(
        baseline["columns"]["x"], profile.rebin(values, baseline["columns"]["x"])
    )
    assert math.isclose(x["psi"], round(expected, 4))
    assert x["out_of_range"] == round(float(np.mean(values > 10.0)), 4)
    assert moved["predictions"]["status"] == "fail"  # the answers moved with x
    assert calm["predictions"]["status"] == "ok"


def test_unseen_categories_are_a_bin_of_their_own_and_counted() -> None:
    baseline = _training(5_000, seed=1)
    tally = monitoring.Tally(SCHEMA, baseline)
    for line in _requests(2, 60):
        # Half of each request's colours were categories the version does not know.
        for row in line["instances"][:5]:
            row[1] = None
        tally.add({**line, "unseen": {"colour": 5}})

    colour = {row["feature"]: row for row in _report(tally)["features"]}["colour"]

    assert colour["unseen"] == 0.5
    assert colour["missing"] == 0.0  # a null the client sent is missing; these were not
    assert colour["status"] == "fail"


def test_lines_that_are_not_this_versions_are_skipped_and_few_instances_not_judged() -> None:
    tally = monitoring.Tally(SCHEMA, _training(1_000, seed=1))
    tally.add(_line([[1.0, 0.0]], [2.0]))  # two features: another schema's line
    tally.add({"status": 200})  # no instances
    tally.add(
        {
            "time": "2026-12-06T10:00:01.000000Z",
            "status": 422,
            "problem": "invalid-instances",
            "errors": 2,
        }
    )
    for line in _requests(2, 10, shift=4.0):  # 100 instances, shifted
        tally.add(line)

    report = _report(tally)

    assert report["skipped_lines"] == 2
    assert report["refused"] == {"invalid-instances": 1}
    assert (report["requests"], report["instances"]) == (11, 100)
    assert not report["judged"]
    assert {row["status"] for row in report["features"]} == {"too few"}
    assert report["drifted"] == []
