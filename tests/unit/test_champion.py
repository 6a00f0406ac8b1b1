"""The champion never gets worse: it moves only to a candidate at least as good on
every gated metric, on its own hold-out and on the champion's reference set. A
candidate within the change thresholds but worse is blessed (registered, and deployed
to staging unless ``[gate] staging = "champion"``) and stays a challenger.

On scikit-learn's breast cancer data (569 tumours, binary), shipped in the package."""

from __future__ import annotations

import dataclasses
import io
import random
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from sklearn.datasets import load_breast_cancer
from sklearn.metrics import accuracy_score, log_loss, roc_auc_score

from modelrail.domain.features import FeatureSchema
from modelrail.domain.registry import CHAMPION, MODEL_FILE, REFERENCE_FILE
from modelrail.entry import init
from tests.conftest import installed
from tests.unit.conftest import Harness

MODEL = "breast-cancer"


@pytest.fixture(scope="module")
def tumours() -> pd.DataFrame:
    frame = load_breast_cancer(as_frame=True).frame
    frame["target"] = frame["target"].map({0: "malignant", 1: "benign"})
    return frame


def _csv(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False).encode()


def _install(harness: Harness, frame: pd.DataFrame, tmp_path: Path, gate: str = "") -> Harness:
    """The model ``init`` infers from ``frame``, its gate as written, or ``gate`` (TOML)
    in its place; the harness acting for it."""
    csv_path = tmp_path / "tumours.csv"
    csv_path.write_bytes(_csv(frame))
    config_path, _ = init.write(init.infer(csv_path, "target", name=MODEL), tmp_path / MODEL)
    if gate:
        text = config_path.read_text()
        config_path.write_text(text[: text.index("[gate]")] + gate)
    container = installed(harness.container, config_path)
    return dataclasses.replace(harness, container=container)


# A tolerant gate: up to 5 % worse on AUC and 25 % on log-loss than the champion is
# blessed.
TOLERANT = """[gate]
staging = "{staging}"
[[gate.metrics]]
name = "auc"
direction = "higher"
min = 0.6
max_change_rel = 0.05
[[gate.metrics]]
name = "binary_logloss"
direction = "lower"
max_change_rel = 0.25
"""


def _noisy(frame: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """``frame`` with ``fraction`` of its labels flipped (a worse, still valid upload)."""
    rng = np.random.default_rng(seed)
    flipped = frame.copy()
    rows = rng.choice(len(frame), size=round(fraction * len(frame)), replace=False)
    other = {"malignant": "benign", "benign": "malignant"}
    flipped.loc[rows, "target"] = flipped.loc[rows, "target"].map(other)
    return flipped


def _upload(harness: Harness, frame: pd.DataFrame, name: str) -> None:
    harness.upload(_csv(frame), f"uploads/{MODEL}/{name}.csv")
    harness.run()


def _champion(harness: Harness) -> int:
    alias = harness.container.registry.alias(MODEL, CHAMPION)
    assert alias is not None
    return alias.version


@pytest.mark.parametrize("staging", ["blessed", "champion"])
def test_a_blessed_candidate_worse_than_the_champion_does_not_become_it(
    harness: Harness, tumours: pd.DataFrame, tmp_path: Path, staging: str
) -> None:
    harness = _install(harness, tumours, tmp_path, TOLERANT.format(staging=staging))
    _upload(harness, tumours, "clean")
    # A few labels wrong: worse on log-loss, within the tolerance.
    _upload(harness, _noisy(tumours, 0.01, seed=3), "slightly-noisy")

    registry = harness.container.registry
    first, second = harness.runs()
    assert (first.outcome, _champion(harness)) == ("deployed", 1)
    verdict = harness.container.runs.report(second.run_id, "evaluation")["verdict"]
    assert verdict["blessed"] is True
    assert verdict["promote"] is False
    assert verdict["promotion"].startswith("v1 stays the champion: on the holdout: binary_logloss=")
    assert registry.versions(MODEL) == [1, 2]  # registered all the same
    assert registry.manifest(MODEL, 2).verdict["promotion"] == verdict["promotion"]
    if staging == "blessed":
        assert second.outcome == "deployed"
        assert registry.aliases(MODEL) == {"champion": 1, "staging": 2}
    else:
        assert second.outcome == "superseded"  # registered; staging follows champions only
        assert second.stages["deploy"].output["reason"].startswith("not the champion (v1 is)")
        assert registry.aliases(MODEL) == {"champion": 1, "staging": 1}
    # The card says so, with the comparisons.
    card = registry.read_file(MODEL, 2, "card.html")
    assert card is not None
    assert b"v1 stays the champion" in card
    assert b"on the holdout: auc=" in card


def _gated(model: lgb.Booster, schema: FeatureSchema, reference: pd.DataFrame) -> dict[str, float]:
    """AUC and log-loss of ``model`` on ``reference``, by scikit-learn: a referee that
    shares no code with the gate."""
    columns = {name: reference[name].to_numpy() for name in reference.columns}
    truth = schema.encode_target(np.asarray(reference[schema.target].to_numpy(), dtype=object))
    score = model.predict(schema.encode_columns(columns))
    return {
        "auc": float(roc_auc_score(truth, score)),
        "binary_logloss": float(log_loss(truth, score, labels=[0, 1])),
        "accuracy": float(accuracy_score(truth, score >= 0.5)),
    }


def test_whenever_the_champion_moves_it_is_at_least_as_good_on_the_last_ones_reference(
    harness: Harness, tumours: pd.DataFrame, tmp_path: Path
) -> None:
    """Uploads of random quality (labels flipped, rows left out) one after another:
    every move of the champion goes to a model scoring at least as well as the one it
    replaces, on that one's reference set, by an independent referee."""
    harness = _install(harness, tumours, tmp_path, TOLERANT.format(staging="blessed"))
    registry = harness.container.registry
    rng = random.Random(11)
    moves = 0
    champion = None
    for upload in range(7):
        noise = rng.choice([0.0, 0.0, 0.01, 0.03, 0.08])
        kept = tumours.sample(frac=rng.uniform(0.85, 1.0), random_state=upload).reset_index(
            drop=True
        )
        _upload(harness, _noisy(kept, noise, seed=upload), f"upload-{upload}")
        now = registry.alias(MODEL, CHAMPION)
        if now is None or (champion is not None and now.version == champion):
            continue
        if champion is not None:
            moves += 1
            reference = pq.read_table(
                io.BytesIO(registry.read_file(MODEL, champion, REFERENCE_FILE) or b"")
            ).to_pandas()
            scores = {}
            for version in (champion, now.version):
                manifest = registry.manifest(MODEL, version)
                text = registry.read_file(MODEL, version, MODEL_FILE) or b""
                booster = lgb.Booster(model_str=text.decode())
                schema = FeatureSchema.from_dict(manifest.features)
                scores[version] = _gated(booster, schema, reference)
            old, new = scores[champion], scores[now.version]
            assert new["auc"] >= old["auc"] - 1e-12, (champion, now.version, old, new)
            assert new["binary_logloss"] <= old["binary_logloss"] + 1e-12, (old, new)
        champion = now.version
    outcomes = [run.outcome for run in harness.runs()]
    assert len(outcomes) == 7
    assert moves >= 1  # the property was put to the test
    assert len(registry.versions(MODEL)) > 1 + moves  # some blessed, not all champions
