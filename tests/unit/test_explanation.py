"""The model card's global explanation: TreeSHAP on the hold-out, beside gain."""

from __future__ import annotations

from typing import Any

import lightgbm
import numpy as np
import orjson

from modelrail.domain import explanation
from modelrail.domain.features import FeatureSchema
from modelrail.domain.registry import Manifest
from tests.unit.conftest import Harness

SCHEMA = FeatureSchema.from_dict(
    {
        "objective": "multiclass",
        "target": "y",
        "classes": ["a", "b", "c"],
        "features": [
            {"name": "size", "type": "number", "nullable": True, "categories": []},
            {"name": "colour", "type": "category", "nullable": True, "categories": ["r", "g"]},
            {"name": "noise", "type": "number", "nullable": False, "categories": []},
        ],
    }
)


def test_the_sample_is_uniform_bounded_and_repeatable() -> None:
    batches = [
        np.arange(start, start + 700, dtype=float).reshape(-1, 1) for start in (0, 700, 1400)
    ]
    first, again, small = (
        explanation.Sample(3, 300),
        explanation.Sample(3, 300),
        explanation.Sample(3),
    )
    for batch in batches:
        first.add(batch)
        again.add(batch)
        small.add(batch[:10])
    rows = first.rows()[:, 0]
    assert first.seen == 2100
    assert len(rows) == 300
    assert len(set(rows)) == 300
    np.testing.assert_array_equal(rows, again.rows()[:, 0])
    # Uniform: each third of the rows holds about a third of the sample.
    assert all(70 < np.sum((rows >= lo) & (rows < lo + 700)) < 130 for lo in (0, 700, 1400))
    assert len(small.rows()) == 30  # fewer rows than the sample's size: every one


def trained() -> tuple[lightgbm.Booster, np.ndarray]:
    rng = np.random.default_rng(1)
    size = rng.normal(size=400)
    size[rng.random(400) < 0.1] = np.nan
    colour = rng.integers(0, 2, 400).astype(float)
    matrix = np.column_stack([size, colour, rng.normal(size=400)])
    label = np.digitize(np.nan_to_num(size) + colour, [-0.3, 0.8])
    params = {"objective": "multiclass", "num_class": 3, "verbosity": -1, "num_leaves": 7}
    data = lightgbm.Dataset(matrix, label.astype(float), categorical_feature=[1])
    return lightgbm.train(params, data, num_boost_round=10), matrix


def test_the_summary_is_the_mean_absolute_pred_contrib() -> None:
    booster, matrix = trained()
    summary = explanation.summarise(
        SCHEMA, matrix, lambda rows: booster.predict(rows, pred_contrib=True), 400
    )
    assert summary is not None
    contributions = booster.predict(matrix, pred_contrib=True).reshape(400, 3, 4)[:, :, :3]
    expected = np.abs(contributions).mean(axis=0).sum(axis=0)
    assert list(summary["mean_abs_contribution"].values()) == expected.tolist()
    assert [d["feature"] for d in summary["dependence"]][:2] == ["size", "colour"]
    colour = next(d for d in summary["dependence"] if d["feature"] == "colour")
    assert set(colour["values"]) <= {"r", "g"}
    assert colour["categorical"]
    size = summary["dependence"][0]
    assert None in size["values"]  # missing stays missing
    assert len(size["values"]) == len(size["contributions"]) == explanation.DEPENDENCE_POINTS
    assert explanation.summarise(SCHEMA, np.empty((0, 3)), booster.predict, 0) is None


def test_the_card_shows_contributions_beside_gain(harness: Harness, penguins_csv: bytes) -> None:
    harness.upload(penguins_csv)
    harness.run()
    store = harness.storage.bucket("modelrail-artifacts")
    prefix = f"models/{harness.model}/versions/1/"
    manifest = Manifest.from_json(orjson.loads(store.read(prefix + "manifest.json").data))
    described: Any = (manifest.diagnostics or {})["explanation"]
    assert described["rows"] == described["hold_out_rows"] > 0
    assert set(described["mean_abs_contribution"]) == set(manifest.features["features"][i]["name"]
                                                         for i in range(6))  # fmt: skip
    card = store.read(prefix + "card.html").data.decode()
    assert "Feature contributions (hold-out, TreeSHAP)" in card
    assert card.count("<figure><figcaption>") >= explanation.DEPENDENCE_FEATURES
    assert ">contribution</text>" in card  # the dependence plots' axis
