"""Training is deterministic and supports every objective the config allows."""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pytest

from modelrail.domain import evaluation, training
from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset import checks, snapshot, synth
from modelrail.domain.features import FeatureSchema


def test_training_is_deterministic(config: PipelineConfig, penguins_csv: bytes) -> None:
    parsed = checks.load(penguins_csv, config.contract)

    first, second = training.train(parsed, config), training.train(parsed, config)

    assert first.model_text == second.model_text
    assert first.best_iteration < config.num_boost_round  # early stopping stopped it


def test_the_split_is_a_fixed_partition_by_row_not_position(
    config: PipelineConfig, penguins_csv: bytes
) -> None:
    parsed = checks.load(penguins_csv, config.contract)
    parts = training.split(parsed, config)

    together = np.concatenate([parts.train, parts.validation, parts.holdout])
    assert sorted(together.tolist()) == list(range(parsed.rows))
    assert 0.12 < len(parts.holdout) / parsed.rows < 0.28  # holdout_fraction 0.2
    assert np.array_equal(parts.holdout, training.split(parsed, config).holdout)
    # Reordered, with relabelled rows: each row stays on its side.
    order = np.random.default_rng(3).permutation(parsed.rows)
    columns = {name: values[order] for name, values in parsed.columns.items()}
    columns["species"] = columns["species"][::-1].copy()
    moved = training.split(checks.ParsedDataset(columns, parsed.rows), config)
    assert sorted(order[moved.holdout].tolist()) == parts.holdout.tolist()


def test_categoricals_are_native_and_encoded_from_the_contract(
    config: PipelineConfig, penguins_csv: bytes
) -> None:
    parsed = checks.load(penguins_csv, config.contract)
    candidate = training.train(parsed, config)
    booster = lgb.Booster(model_str=candidate.model_text.decode())

    assert booster.feature_name() == candidate.schema.names
    text = candidate.model_text.decode()
    # island and sex are categorical splits (their feature_infos list category codes)
    infos = text.split("feature_infos=")[1].split("\n")[0].split(" ")
    assert infos[0] == "-1:0:1:2"
    assert infos[-1] == "-1:1:0"
    assert "cat_threshold=" in text
    records = candidate.examples
    by_rows = candidate.schema.encode_records(records)
    by_columns = candidate.schema.encode_columns(
        {
            name: np.array([r[name] for r in records], dtype=object if f.is_categorical else float)
            for name, f in zip(candidate.schema.names, candidate.schema.features, strict=True)
        }
    )
    assert np.array_equal(by_rows, by_columns, equal_nan=True)


def _contract_variant(tmp_path: Path, objective: str, target: dict[str, object]) -> PipelineConfig:
    repo = Path(__file__).resolve().parents[2]
    spec = json.loads((repo / "schemas/datasets/penguins.json").read_text())
    spec["columns"] = [c for c in spec["columns"] if c["name"] != "species"] + [target]
    spec["target"] = target["name"]
    (tmp_path / "contract.json").write_text(json.dumps(spec))
    toml = (repo / "pipeline.toml").read_text()
    toml = toml.replace('contract = "schemas/datasets/penguins.json"', 'contract = "contract.json"')
    toml = toml.replace('objective = "multiclass"', f'objective = "{objective}"')
    toml = toml[: toml.index("[[gate.metrics]]")]
    (tmp_path / "pipeline.toml").write_text(toml)
    return PipelineConfig.load(tmp_path / "pipeline.toml")


@pytest.mark.parametrize(
    ("objective", "target", "metric", "floor"),
    [
        ("binary", {"name": "label", "type": "category", "categories": ["no", "yes"]}, "auc", 0.8),
        ("regression", {"name": "label", "type": "number", "min": 0, "max": 100}, "r2", 0.5),
    ],
)
def test_binary_and_regression_objectives_learn_from_synthetic_data(
    tmp_path: Path, objective: str, target: dict[str, object], metric: str, floor: float
) -> None:
    config = _contract_variant(tmp_path, objective, target)
    frame = synth.generate(config.contract, 3000, seed=1)
    parsed = checks.load(frame.to_csv(index=False).encode(), config.contract)

    candidate = training.train(parsed, dataclasses.replace(config))

    schema = FeatureSchema.from_contract(config.contract, objective)
    holdout = training.split(parsed, config).holdout
    booster = lgb.Booster(model_str=candidate.model_text.decode())
    prediction = booster.predict(schema.encode_columns(parsed.columns)[holdout])
    result = evaluation.metrics(
        objective, schema.encode_target(parsed.columns["label"])[holdout], prediction
    )
    assert result[metric] > floor


def test_training_uses_the_cores_it_has_and_repeats_itself_at_a_thread_count(
    config: PipelineConfig, penguins_csv: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed = checks.load(penguins_csv, config.contract)
    monkeypatch.setattr(training, "available_cores", lambda: 4)
    schema = FeatureSchema.from_contract(config.contract, config.objective)

    assert training.lgb_params(config, schema, 300)["num_threads"] == 1  # too few rows
    assert training.lgb_params(config, schema, 120_000)["num_threads"] == 2
    assert training.lgb_params(config, schema, 10**7)["num_threads"] == 4  # every core
    pinned = dataclasses.replace(config, params={**config.params, "nthread": 3})
    assert "num_threads" not in training.lgb_params(pinned, schema, 10**7)  # the user's alias
    first, second = training.train(parsed, config), training.train(parsed, config)
    assert first.params["num_threads"] == 1  # recorded with the candidate
    assert first.model_text == second.model_text


def test_the_hold_out_read_part_by_part_is_the_splits_hold_out(
    config: PipelineConfig, penguins_csv: bytes
) -> None:
    # Tripled, so every row has exact duplicates, some in other parts than their first.
    body = penguins_csv.split(b"\n", 1)[1]
    _, parsed = checks.validate(penguins_csv + body + body, config.contract)
    whole = snapshot.arrow(parsed, config.contract)
    expected = whole.take(training.split(parsed, config).holdout)
    bounds = [0, 100, 344, 500, 777, whole.num_rows]  # parts of uneven sizes

    held = pa.concat_tables(
        training.holdout_parts(
            (whole.slice(a, b - a) for a, b in itertools.pairwise(bounds)),
            config.contract,
            config,
        )
    )

    assert 0 < held.num_rows < 344 * 0.3  # the penguins' hold-out, each row once
    assert held.equals(expected)
