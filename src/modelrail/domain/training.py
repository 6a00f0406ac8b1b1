"""Training: a deterministic split and ``lightgbm.train`` with early stopping.

The split assigns each row by a hash of its inputs (every column but the target) and
the seed, not by its position: training, evaluation and any re-run agree on it without
storing row lists, and a row lands on the same side in every upload that contains it.
So a later upload's hold-out never holds rows an earlier model trained on (reordered or
repeated data cannot leak them). Exact duplicate rows count once: the split keeps each
distinct row's first occurrence (``dataset.duplicates``), so a repeated file trains
and is judged as the file itself. Categorical
features use LightGBM's native categoricals (codes from the contract, see
``features``). The model is saved in LightGBM's text format, trimmed to the best
iteration.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa

from modelrail.domain.config import PipelineConfig, lightgbm_parameters
from modelrail.domain.dataset import duplicates, table
from modelrail.domain.dataset.checks import ParsedDataset
from modelrail.domain.dataset.contract import DatasetContract
from modelrail.domain.features import FeatureSchema
from modelrail.kernel.errors import DataUnavailable

EXAMPLES = 3  # hold-out rows kept in the manifest for smoke tests

_LGB_OBJECTIVE = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}
_LGB_METRIC = {"binary": "binary_logloss", "multiclass": "multi_logloss", "regression": "l2"}


@dataclasses.dataclass(frozen=True)
class Split:
    train: np.ndarray
    validation: np.ndarray
    holdout: np.ndarray
    duplicates: int = 0  # exact duplicate rows left out of all three


@dataclasses.dataclass(frozen=True)
class Candidate:
    model_text: bytes
    best_iteration: int
    params: Mapping[str, Any]
    schema: FeatureSchema
    train_metrics: Mapping[str, float]
    examples: list[dict[str, Any]]


TRAIN, VALIDATION, HOLDOUT = 0, 1, 2
# One process's peak while it trains, per value of the snapshot (rows x columns): the
# columns, their encoding, the split's copies and LightGBM's dataset. Measured: 4,079 MB
# at 10M rows of 9 columns (45 bytes a value, benchmarks/training.py) and 19 GiB at 50M.
LOCAL_PEAK_BYTES_PER_VALUE = 48


def split(dataset: ParsedDataset, config: PipelineConfig) -> Split:
    """Each distinct row's side (train, validation, hold-out) by the hash of its inputs;
    exact duplicates of an earlier row are on no side."""
    unique = duplicates.first_occurrences(dataset.columns)
    side = sides({n: v[unique] for n, v in dataset.columns.items()}, config)
    return Split(
        train=unique[side == TRAIN],
        validation=unique[side == VALIDATION],
        holdout=unique[side == HOLDOUT],
        duplicates=dataset.rows - len(unique),
    )


def holdout_parts(
    parts: Iterable[pa.Table], contract: DatasetContract, config: PipelineConfig
) -> Iterator[pa.Table]:
    """The hold-out of data arriving part by part, as ``split`` holds it out of the
    whole, a part at a time: each distinct row's first occurrence whose side is
    ``HOLDOUT``, in order. An exact duplicate has its original's inputs, so its side:
    keeping the first of the held-out rows is keeping the held-out first occurrences.
    Memory holds one part and the held-out rows' hashes, not the data."""
    seen = np.empty(0, dtype=np.uint64)  # the held-out rows' hashes so far, sorted
    empty = True
    for part in parts:
        empty = False
        columns = table.TableColumns(part, contract)
        held = np.flatnonzero(sides(columns, config) == HOLDOUT)
        hashes = pd.util.hash_pandas_object(
            pd.DataFrame({n: columns[n][held] for n in columns}), index=False
        ).to_numpy(dtype=np.uint64)
        distinct, first = np.unique(hashes, return_index=True)
        new = first[~np.isin(distinct, seen, assume_unique=True)]
        seen = np.union1d(seen, distinct)
        yield part.take(held[np.sort(new)])
    if empty:
        raise DataUnavailable("the snapshot has no parts: nothing to hold out")


def sides(columns: Mapping[str, np.ndarray], config: PipelineConfig) -> np.ndarray:
    """Each row's side (``TRAIN``, ``VALIDATION``, ``HOLDOUT``) from its own inputs and
    the seed alone, so any slice of the data (a snapshot's part on a Dask worker) puts
    each row where the whole would."""
    inputs = pd.DataFrame({n: v for n, v in columns.items() if n != config.contract.target})
    hashes = pd.util.hash_pandas_object(inputs, index=False).to_numpy(dtype=np.uint64)
    # The seed moves every row's position on the unit interval alike: another seed,
    # another partition of the same rows.
    offset = np.uint64(np.random.default_rng(config.seed).integers(0, 2**63))
    position = (hashes + offset).astype(np.float64) / 2.0**64
    side = np.full(len(position), TRAIN, dtype=np.int8)
    side[position < config.holdout_fraction + config.validation_fraction] = VALIDATION
    side[position < config.holdout_fraction] = HOLDOUT
    return side


ROWS_PER_THREAD = 50_000


def available_cores() -> int:
    """The cores this process may run on: the machine's locally, the CPUs a Cloud Run
    job's container is given in the cloud (its CPU affinity, not the host's count)."""
    return len(os.sched_getaffinity(0))


def lgb_params(config: PipelineConfig, schema: FeatureSchema, rows: int) -> dict[str, Any]:
    """What ``lightgbm.train`` gets. Unless [training.params] sets ``num_threads``,
    training uses the cores it is given, one per ``ROWS_PER_THREAD`` rows: threads only
    pay for themselves on enough data, and OpenMP threads on a busy machine can wait for
    each other far longer than the work takes (measured: 0.4 s on one thread, 70 s on
    two, for the bundled 344 rows beside another process). The count is recorded with
    the candidate's parameters, because it is part of what makes a model reproducible:
    the same data, configuration and thread count give the same model bytes
    (``deterministic`` and
    ``force_row_wise``, set in the default configuration, make LightGBM's sums run in a
    fixed order); another thread count may round differently."""
    params: dict[str, Any] = {
        "objective": _LGB_OBJECTIVE[config.objective],
        "metric": _LGB_METRIC[config.objective],
        "seed": config.seed,
        **config.params,
    }
    canonical = {lightgbm_parameters().get(name) for name in config.params}
    if "num_threads" not in canonical:
        params["num_threads"] = min(available_cores(), max(1, rows // ROWS_PER_THREAD))
    if config.objective == "multiclass":
        params["num_class"] = len(schema.classes)
    return params


def train(dataset: ParsedDataset, config: PipelineConfig) -> Candidate:
    schema = FeatureSchema.from_contract(config.contract, config.objective)
    features = schema.encode_columns(dataset.columns)
    target = schema.encode_target(dataset.columns[schema.target])
    parts = split(dataset, config)
    params = lgb_params(config, schema, len(parts.train))
    train_set = lgb.Dataset(
        features[parts.train],
        target[parts.train],
        feature_name=schema.names,
        categorical_feature=schema.categorical_names or "auto",
        free_raw_data=False,
    )
    validation_set = lgb.Dataset(
        features[parts.validation], target[parts.validation], reference=train_set
    )
    evals: dict[str, Any] = {}
    booster = lgb.train(
        params,
        train_set,
        num_boost_round=config.num_boost_round,
        valid_sets=[validation_set],
        valid_names=["validation"],
        callbacks=[
            lgb.early_stopping(config.early_stopping_rounds, verbose=False),
            lgb.record_evaluation(evals),
        ],
    )
    best = booster.best_iteration or booster.current_iteration()
    metric = params["metric"]
    train_metrics = {f"validation_{metric}": float(evals["validation"][metric][best - 1])}
    return Candidate(
        model_text=booster.model_to_string(num_iteration=best).encode(),
        best_iteration=best,
        params=params,
        schema=schema,
        train_metrics=train_metrics,
        examples=examples(dataset.columns, schema, parts.holdout[:EXAMPLES]),
    )


def examples(
    columns: Mapping[str, np.ndarray], schema: FeatureSchema, rows: np.ndarray
) -> list[dict[str, Any]]:
    """Rows as a client would send them: feature name -> JSON value (null if missing)."""
    result = []
    for row in rows:
        record: dict[str, Any] = {}
        for feature in schema.features:
            value = columns[feature.name][row]
            if value is None or (isinstance(value, float) and math.isnan(value)):
                record[feature.name] = None
            elif feature.type == "integer":
                record[feature.name] = int(value)
            elif feature.type == "boolean":
                record[feature.name] = bool(value)
            else:
                record[feature.name] = value if feature.is_categorical else float(value)
        result.append(record)
    return result
