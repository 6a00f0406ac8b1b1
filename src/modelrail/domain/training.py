"""Training: a deterministic split and ``lightgbm.train`` with early stopping, or
k-fold cross-validation where a hold-out would be too small to mean anything.

The split plan is decided from the data before it splits (``plan``), and recorded
with the candidate so evaluate holds out the same rows:

- **by inputs** (the common case): each row's side is a hash of its inputs (every
  column but the target) and the seed, not its position: training, evaluation and any
  re-run agree on it without storing row lists, and a row lands on the same side in
  every upload that contains it. So a later upload's hold-out never holds rows an
  earlier model trained on (reordered or repeated data cannot leak them). Exact
  duplicate rows count once: the split keeps each distinct row's first occurrence
  (``dataset.duplicates``), so a repeated file trains and is judged as the file itself.
- **by occurrence**, when the data holds so few distinct input rows that a hold-out of
  whole input rows would hold fewer than ``MIN_HOLDOUT_INPUTS`` of them (Titanic's
  1,316 passengers are 12 distinct rows of class, age and sex): every row is a sample,
  duplicates included, and the k-th occurrence (in row order) of each distinct input
  row gets its side from the hash of its inputs, k and the seed. The k-th sample of an
  input row is on the same side in every upload that appends to the data, so a later
  hold-out holds no sample an earlier model trained on.

When the hold-out would hold fewer than ``MIN_HOLDOUT_ROWS`` samples, the candidate is
judged by ``FOLDS``-fold cross-validation instead (``CrossValidation``): the folds are
cut from the same hash positions (a sample is in exactly one fold), ``lightgbm.cv``
picks the number of rounds by early stopping, the gate's metrics come from the pooled
out-of-fold predictions, and the model is trained on every sample for that many rounds.
Categorical features use LightGBM's native categoricals (codes from the contract, see
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

from modelrail.domain import evaluation
from modelrail.domain.config import PipelineConfig, lightgbm_parameters
from modelrail.domain.dataset import duplicates, table
from modelrail.domain.dataset.checks import ParsedDataset
from modelrail.domain.dataset.contract import DatasetContract
from modelrail.domain.features import FeatureSchema
from modelrail.kernel.errors import DataUnavailable

EXAMPLES = 3  # hold-out rows kept in the manifest for smoke tests

# Below this many distinct input rows expected in a hold-out of whole input rows, the
# split is by occurrence: a hold-out of a handful of input rows judges the model on
# which few happened to land there (and on input rows training never saw), not on the
# data. 30 is the usual least sample for a mean to be near normal; at the default 20 %
# hold-out, data with fewer than 150 distinct input rows is split by occurrence.
MIN_HOLDOUT_INPUTS = 30
# Below this many samples in the hold-out, the candidate is judged by cross-validation:
# one row of fewer than 50 moves accuracy by more than 2 points, more than the gate's
# usual change tolerance (0.03 is `init`'s), so the gate would compare noise. At the
# default 20 % hold-out that is data of fewer than about 250 samples; the bundled
# penguins (344 rows, a 67-row hold-out) stay judged on their hold-out.
MIN_HOLDOUT_ROWS = 50
FOLDS = 5
# Metrics computed on fewer rows than this are reported with a warning.
FEW_ROWS = 100

BY_INPUTS, BY_OCCURRENCE = "inputs", "occurrence"


@dataclasses.dataclass(frozen=True)
class SplitPlan:
    """How rows are split: ``by`` inputs or occurrence, decided from the count of
    ``distinct_inputs``, and ``why``, in words."""

    by: str
    distinct_inputs: int
    why: str

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, body: Mapping[str, Any] | None) -> SplitPlan:
        """The recorded plan; a candidate recorded before plans was split by inputs."""
        if body is None:
            return cls(BY_INPUTS, 0, "recorded before split plans: by inputs")
        return cls(str(body["by"]), int(body["distinct_inputs"]), str(body["why"]))


@dataclasses.dataclass(frozen=True)
class CrossValidation:
    """How a candidate of small data was judged: ``folds``-fold cross-validation over
    ``rows`` samples, its gate metrics from the pooled out-of-fold ``predictions`` (in
    the samples' order, ``Split.samples``), and ``why``."""

    folds: int
    rows: int
    metrics: Mapping[str, float]
    predictions: list[Any]
    why: str

    def to_json(self) -> dict[str, Any]:
        return {"method": "cross-validation", **dataclasses.asdict(self)}

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> CrossValidation:
        return cls(
            folds=int(body["folds"]),
            rows=int(body["rows"]),
            metrics=dict(body["metrics"]),
            predictions=list(body["predictions"]),
            why=str(body["why"]),
        )


_LGB_OBJECTIVE = {"binary": "binary", "multiclass": "multiclass", "regression": "regression"}
_LGB_METRIC = {"binary": "binary_logloss", "multiclass": "multi_logloss", "regression": "l2"}


@dataclasses.dataclass(frozen=True)
class Split:
    train: np.ndarray
    validation: np.ndarray
    holdout: np.ndarray
    plan: SplitPlan
    # Every row on a side, in row order, and its position on the unit interval.
    samples: np.ndarray
    positions: np.ndarray
    duplicates: int = 0  # exact duplicate rows left out of all three


@dataclasses.dataclass(frozen=True)
class Candidate:
    model_text: bytes
    best_iteration: int
    params: Mapping[str, Any]
    schema: FeatureSchema
    train_metrics: Mapping[str, float]
    examples: list[dict[str, Any]]
    split: SplitPlan
    cross_validation: CrossValidation | None = None


TRAIN, VALIDATION, HOLDOUT = 0, 1, 2
# One process's peak while it trains, per value of the snapshot (rows x columns): the
# columns, their encoding, the split's copies and LightGBM's dataset. Measured: 4,079 MB
# at 10M rows of 9 columns (45 bytes a value, benchmarks/training.py) and 19 GiB at 50M.
LOCAL_PEAK_BYTES_PER_VALUE = 48


def input_hashes(columns: Mapping[str, np.ndarray], config: PipelineConfig) -> np.ndarray:
    """A 64-bit hash of each row's inputs (every column but the target)."""
    inputs = pd.DataFrame({n: v for n, v in columns.items() if n != config.contract.target})
    return pd.util.hash_pandas_object(inputs, index=False).to_numpy(dtype=np.uint64)


def plan(distinct_inputs: int, config: PipelineConfig) -> SplitPlan:
    """The split for data of ``distinct_inputs`` distinct input rows."""
    share = f"{config.holdout_fraction:.0%}"
    expected = distinct_inputs * config.holdout_fraction
    if expected < MIN_HOLDOUT_INPUTS:
        return SplitPlan(
            BY_OCCURRENCE,
            distinct_inputs,
            f"{distinct_inputs} distinct input rows: a {share} hold-out of whole input rows "
            f"would hold about {expected:.0f} of them (fewer than {MIN_HOLDOUT_INPUTS}), each "
            "unseen by training; so each row is a sample, repeated rows too, its side "
            "given by its inputs and its occurrence",
        )
    return SplitPlan(
        BY_INPUTS,
        distinct_inputs,
        f"{distinct_inputs} distinct input rows: each on one side in every upload, "
        "exact duplicate rows counted once",
    )


def split(dataset: ParsedDataset, config: PipelineConfig, how: SplitPlan | None = None) -> Split:
    """Each sample's side (train, validation, hold-out), by ``how`` (else the plan the
    data calls for): by inputs, each distinct row's side by the hash of its inputs, and
    exact duplicates of an earlier row on no side; by occurrence, every row's side by
    its inputs and its occurrence."""
    hashes = input_hashes(dataset.columns, config)
    how = how or plan(len(duplicates.distinct_sorted(hashes)), config)
    if how.by == BY_OCCURRENCE:
        samples = np.arange(dataset.rows)
        position = _placed(hashes, config, Occurrences())
    else:
        samples = duplicates.first_occurrences(dataset.columns)
        position = _placed(hashes[samples], config)
    side = side_of(position, config)
    return Split(
        train=samples[side == TRAIN],
        validation=samples[side == VALIDATION],
        holdout=samples[side == HOLDOUT],
        plan=how,
        samples=samples,
        positions=position,
        duplicates=dataset.rows - len(samples),
    )


def holdout_parts(
    parts: Iterable[pa.Table],
    contract: DatasetContract,
    config: PipelineConfig,
    how: SplitPlan | None = None,
) -> Iterator[pa.Table]:
    """The hold-out of data arriving part by part, as ``split`` holds it out of the
    whole by the plan ``how`` (None: by inputs), a part at a time, in order. By inputs:
    each distinct row's first occurrence whose side is ``HOLDOUT`` (an exact duplicate
    has its original's inputs, so its side: keeping the first of the held-out rows is
    keeping the held-out first occurrences). By occurrence: every held-out row, each input
    row's occurrences counted on from one part to the next. Memory holds one part and
    the held-out rows' hashes (or each distinct input row's count), not the data."""
    seen = np.empty(0, dtype=np.uint64)  # the held-out rows' hashes so far, sorted
    counter = Occurrences() if how is not None and how.by == BY_OCCURRENCE else None
    empty = True
    for part in parts:
        empty = False
        columns = table.TableColumns(part, contract)
        held = np.flatnonzero(side_of(positions(columns, config, counter), config) == HOLDOUT)
        if counter is not None:
            yield part.take(held)
            continue
        hashes = pd.util.hash_pandas_object(
            pd.DataFrame({n: columns[n][held] for n in columns}), index=False
        ).to_numpy(dtype=np.uint64)
        distinct, first = np.unique(hashes, return_index=True)
        new = first[~np.isin(distinct, seen, assume_unique=True)]
        seen = np.union1d(seen, distinct)
        yield part.take(held[np.sort(new)])
    if empty:
        raise DataUnavailable("the snapshot has no parts: nothing to hold out")


class Occurrences:
    """Each distinct input row's occurrences so far, keyed by its hash: at most one
    entry per distinct input row, which is few wherever the split is by occurrence."""

    def __init__(self, start: Mapping[int, int] | None = None) -> None:
        self.counts: dict[int, int] = dict(start or {})

    def of(self, hashes: np.ndarray) -> np.ndarray:
        """Each row's occurrence (0 for an input row's first), counting on from the
        rows given before."""
        distinct, inverse, counts = np.unique(hashes, return_inverse=True, return_counts=True)
        before = np.array([self.counts.get(int(h), 0) for h in distinct], dtype=np.int64)
        within = pd.Series(inverse).groupby(inverse).cumcount().to_numpy(dtype=np.int64)
        for h, b, c in zip(distinct.tolist(), before.tolist(), counts.tolist(), strict=True):
            self.counts[h] = b + c
        occurrence: np.ndarray = before[inverse] + within
        return occurrence


def sample_keys(columns: Mapping[str, np.ndarray]) -> np.ndarray:
    """A 64-bit key of each row as a sample: its every column and its occurrence among
    the rows equal to it, so the same rows in two uploads (appended to, reordered) have
    the same keys, and repeated rows distinct ones."""
    rows = pd.util.hash_pandas_object(pd.DataFrame(dict(columns)), index=False).to_numpy(
        dtype=np.uint64
    )
    keyed = pd.DataFrame({"row": rows, "occurrence": Occurrences().of(rows)})
    return pd.util.hash_pandas_object(keyed, index=False).to_numpy(dtype=np.uint64)


def positions(
    columns: Mapping[str, np.ndarray],
    config: PipelineConfig,
    occurrences: Occurrences | None = None,
) -> np.ndarray:
    """Each row's position on the unit interval, from its own inputs and the seed
    alone (so any slice of the data, a snapshot's part on a Dask worker, puts each row
    where the whole would), and by occurrence its occurrence too (counted on by
    ``occurrences`` from the rows it saw before)."""
    return _placed(input_hashes(columns, config), config, occurrences)


def _placed(
    hashes: np.ndarray, config: PipelineConfig, occurrences: Occurrences | None = None
) -> np.ndarray:
    """``positions`` of rows whose inputs hash to ``hashes``."""
    if occurrences is not None:
        keyed = pd.DataFrame({"inputs": hashes, "occurrence": occurrences.of(hashes)})
        hashes = pd.util.hash_pandas_object(keyed, index=False).to_numpy(dtype=np.uint64)
    # The seed moves every row's position on the unit interval alike: another seed,
    # another partition of the same rows.
    offset = np.uint64(np.random.default_rng(config.seed).integers(0, 2**63))
    position: np.ndarray = (hashes + offset).astype(np.float64) / 2.0**64
    return position


def side_of(position: np.ndarray, config: PipelineConfig) -> np.ndarray:
    """Each position's side (``TRAIN``, ``VALIDATION``, ``HOLDOUT``)."""
    side = np.full(len(position), TRAIN, dtype=np.int8)
    side[position < config.holdout_fraction + config.validation_fraction] = VALIDATION
    side[position < config.holdout_fraction] = HOLDOUT
    return side


def folds(position: np.ndarray, k: int = FOLDS) -> np.ndarray:
    """Each sample's fold (0 to ``k - 1``): the samples ranked by their position, cut
    into ``k`` runs as equal as can be, so each sample is in exactly one fold."""
    rank = np.empty(len(position), dtype=np.int64)
    rank[np.argsort(position, kind="stable")] = np.arange(len(position))
    fold: np.ndarray = rank * k // max(len(position), 1)
    return fold


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
    if len(parts.holdout) < MIN_HOLDOUT_ROWS:
        return cross_validate(dataset, config, parts, schema, features, target)
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
        split=parts.plan,
    )


def cross_validate(
    dataset: ParsedDataset,
    config: PipelineConfig,
    parts: Split,
    schema: FeatureSchema,
    features: np.ndarray,
    target: np.ndarray,
) -> Candidate:
    """A candidate of data too small for a meaningful hold-out, judged by ``FOLDS``-fold
    cross-validation: ``lightgbm.cv`` over folds cut from the samples' hash positions
    picks the number of rounds by early stopping (the best mean over the folds), the
    gate's metrics come from the out-of-fold predictions at that round, pooled, and the
    model is trained on every sample for that many rounds. Refused when no sound
    evaluation is possible: fewer samples than two per fold."""
    samples, rows = parts.samples, len(parts.samples)
    if rows < 2 * FOLDS:
        raise DataUnavailable(
            f"{rows} rows: too few to judge a model on; {FOLDS}-fold cross-validation "
            f"needs at least {2 * FOLDS}"
        )
    y = target[samples]
    fold = folds(parts.positions)
    indices = np.arange(rows)
    cuts = [(indices[fold != k], indices[fold == k]) for k in range(FOLDS)]
    params = lgb_params(config, schema, rows)
    data = lgb.Dataset(
        features[samples],
        y,
        feature_name=schema.names,
        categorical_feature=schema.categorical_names or "auto",
        free_raw_data=False,
    )
    result = lgb.cv(
        params,
        data,
        num_boost_round=config.num_boost_round,
        folds=cuts,
        callbacks=[lgb.early_stopping(config.early_stopping_rounds, verbose=False)],
        return_cvbooster=True,
    )
    metric = params["metric"]
    history = result[f"valid {metric}-mean"]  # to the best round, by early stopping
    boosters = result["cvbooster"]
    assert isinstance(history, list)  # lightgbm.cv's types: each key's, in one union
    assert isinstance(boosters, lgb.CVBooster)
    best = len(history)
    shape = (rows, len(schema.classes)) if config.objective == "multiclass" else (rows,)
    predicted = np.zeros(shape)
    x = features[samples]
    for model, (_, held) in zip(boosters.boosters, cuts, strict=True):
        predicted[held] = model.predict(x[held], num_iteration=best)
    pooled = evaluation.metrics(config.objective, y, predicted)
    booster = lgb.train(params, data, num_boost_round=best)
    share = f"{config.holdout_fraction:.0%}"
    judged = CrossValidation(
        folds=FOLDS,
        rows=rows,
        metrics=pooled,
        predictions=predicted.tolist(),
        why=f"{FOLDS}-fold cross-validation on {rows} rows: a {share} hold-out would hold "
        f"{len(parts.holdout)} (fewer than {MIN_HOLDOUT_ROWS})",
    )
    return Candidate(
        model_text=booster.model_to_string(num_iteration=best).encode(),
        best_iteration=best,
        params=params,
        schema=schema,
        train_metrics={f"cross_validation_{metric}": float(history[-1])},
        examples=examples(dataset.columns, schema, samples[:EXAMPLES]),
        split=parts.plan,
        cross_validation=judged,
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
