"""Training beyond one machine: ``lightgbm.dask`` on a Dask cluster, fed by the
snapshot's parts.

Each worker reads the parts it is given itself (``dask.dataframe.from_map`` over the
parts' URLs, opened with fsspec: a local file, or ``gs://`` in the cloud), checks each
against the sha256 the snapshot's index records, and encodes it as the single-process
path does (``FeatureSchema.encode_columns``). No part passes through the training job.
The semantics are the single process's, at any size:

- **the split plan** is the one the single process would choose
  (``training.plan``): a first pass over the parts counts each part's distinct input
  rows, up to the few that split by occurrence (``_input_counts``);
- **the split** is the same function of each row's inputs and the seed
  (``training.positions``), computed where the row is; by occurrence, each part counts
  its input rows' occurrences on from the counts of the parts before it, so the k-th
  occurrence is the k-th of the whole snapshot;
- **exact duplicates count once** when split by inputs: rows are told apart by the hash
  of every column, as ``dataset.duplicates`` does, and only distinct rows train,
  validate or are held out (by occurrence, every row is a sample);
- **small data** is refused: a hold-out of fewer than ``training.MIN_HOLDOUT_ROWS``
  rows calls for cross-validation, which runs in one process (``engine = "local"``);
- **the best iteration** is the one with the best validation metric over the whole
  validation side. ``lightgbm.dask`` has no early stopping, so every round of
  ``num_boost_round`` is trained and the model is cut at that iteration, which is the
  iteration early stopping keeps unless the metric improves again after
  ``early_stopping_rounds`` worse ones. The metric is measured after training, where
  the validation partitions are (``_losses``), rather than by ``lightgbm.dask``'s
  ``eval_set``: that one is measured on the returning worker's share of the
  validation rows alone, and a worker given none returns no history;
- **only partitions holding training rows train**: a worker given only empty ones
  would stop LightGBM's distributed learner ("Input data must be 2 dimensional and
  non empty");
- **the examples** (the manifest's smoke-test rows) are the first hold-out rows, read
  part by part until there are enough.

Trees are grown by LightGBM's distributed learner, whose histograms are summed across
workers: the model is not byte-identical to the single process's, and its hold-out
metric is compared with it in ``benchmarks/pipeline.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from modelrail.domain import training
from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset import duplicates, table
from modelrail.domain.features import FeatureSchema
from modelrail.kernel import memory
from modelrail.kernel.errors import DataUnavailable

_TARGET, _ROW, _SIDE = "__target", "__row", "__side"
_INPUT = "__input"


@dataclasses.dataclass(frozen=True)
class PartURL:
    """One snapshot part as a worker opens it: its fsspec URL, sha256 and rows."""

    url: str
    sha256: str
    rows: int


@dataclasses.dataclass(frozen=True)
class ClusterRun:
    """What training on the cluster made, and each worker's peak resident memory."""

    candidate: training.Candidate
    workers: list[dict[str, Any]]


def train(client: Any, parts: Sequence[PartURL], config: PipelineConfig) -> ClusterRun:
    """Train on the cluster ``client`` reaches, from the snapshot's ``parts``."""
    import dask.dataframe as dd
    import lightgbm as lgb

    schema = FeatureSchema.from_contract(config.contract, config.objective)
    meta = pd.DataFrame(
        {
            **{name: pd.Series(dtype="float64") for name in schema.names},
            _TARGET: pd.Series(dtype="float64"),
            _ROW: pd.Series(dtype="uint64"),
            _INPUT: pd.Series(dtype="uint64"),
            _SIDE: pd.Series(dtype="int8"),
        }
    )
    few = training.MIN_HOLDOUT_INPUTS / config.holdout_fraction
    counts = client.gather(client.map(_input_counts, list(parts), config=config, few=few))
    how, offsets = _plan(counts, config)
    frames = dd.from_map(
        _encoded, list(parts), offsets, config=config, meta=meta, enforce_metadata=False
    )
    if how is None or how.by == training.BY_INPUTS:
        samples = frames.drop_duplicates(subset=[_ROW]).persist()
        if how is None:
            how = training.plan(int(samples[_INPUT].nunique().compute()), config)
    else:
        samples = frames.persist()
    held = int((samples[_SIDE] == training.HOLDOUT).sum().compute())
    if held < training.MIN_HOLDOUT_ROWS:
        raise DataUnavailable(
            f"a hold-out of {held} rows is too few to judge a model on: data this small is "
            f"judged by {training.FOLDS}-fold cross-validation, which runs in one process: "
            'train it with [training] engine = "local"'
        )
    fit = _filled(samples[samples[_SIDE] == training.TRAIN])
    check = samples[samples[_SIDE] == training.VALIDATION]
    rows = int(fit.shape[0].compute())
    # The single process's parameters, but threads: Dask gives each worker its own.
    params = {
        k: v for k, v in training.lgb_params(config, schema, rows).items() if k != "num_threads"
    }
    metric = params["metric"]
    # The estimator takes the objective's class count from the labels.
    estimator_class = (
        lgb.DaskLGBMRegressor if config.objective == "regression" else lgb.DaskLGBMClassifier
    )
    estimator = estimator_class(
        client=client,
        n_estimators=config.num_boost_round,
        **{k: v for k, v in params.items() if k not in ("num_class", "objective")},
        objective=params["objective"],
    )
    estimator.fit(
        fit[schema.names], fit[_TARGET], categorical_feature=schema.categorical_names or "auto"
    )
    booster = estimator.booster_
    history = _history(client, check, booster.model_to_string(), schema.names, metric)
    best = int(np.argmin(history)) + 1  # every metric modelrail sets is lower-is-better
    candidate = training.Candidate(
        model_text=booster.model_to_string(num_iteration=best).encode(),
        best_iteration=best,
        params=params,
        schema=schema,
        train_metrics={f"validation_{metric}": float(history[best - 1])},
        examples=_examples(parts, offsets, config, schema),
        split=how,
    )
    return ClusterRun(candidate, _peaks(client))


def _filled(frame: Any) -> Any:
    """``frame`` without its empty partitions (it is persisted: counting is cheap)."""
    lengths = frame.map_partitions(len).compute().tolist()
    return frame.partitions[[n for n, length in enumerate(lengths) if length]]


def _history(
    client: Any, check: Any, model_text: str, names: Sequence[str], metric: str
) -> np.ndarray:
    """The validation ``metric`` of the model's first 1, 2, ... iterations over every
    validation row: each partition's sums of losses, added up where it is."""
    from dask.delayed import delayed

    model = client.scatter(model_text, broadcast=True)
    parts = check.to_delayed()
    if not parts:
        raise DataUnavailable("no validation rows to choose the number of rounds on")
    sums = client.gather(
        client.compute([delayed(_losses)(part, model, names, metric) for part in parts])
    )
    rows = sum(count for _, count in sums)
    if rows == 0:
        raise DataUnavailable("no validation rows to choose the number of rounds on")
    history: np.ndarray = np.sum([loss for loss, count in sums if count], axis=0) / rows
    return history


def _losses(
    frame: pd.DataFrame, model_text: str, names: Sequence[str], metric: str
) -> tuple[np.ndarray | None, int]:
    """One validation partition's sum of ``metric``'s per-row loss after each
    iteration, from raw scores added up one iteration at a time (LightGBM's own
    definitions: l2, and the log losses of the sigmoid and the softmax)."""
    import lightgbm as lgb

    if frame.empty:
        return None, 0
    booster = lgb.Booster(model_str=model_text)
    x = frame[list(names)].to_numpy(dtype=np.float64)
    y = frame[_TARGET].to_numpy()
    rounds = booster.current_iteration()
    averaged = "\naverage_output\n" in model_text  # random forests average their trees
    total: np.ndarray = np.zeros(0)
    losses = np.empty(rounds)
    for n in range(rounds):
        step = np.asarray(booster.predict(x, start_iteration=n, num_iteration=1, raw_score=True))
        total = step if n == 0 else total + step
        raw = total / (n + 1) if averaged else total
        losses[n] = _loss(metric, raw, y)
    return losses, len(frame)


def _loss(metric: str, raw: np.ndarray, y: np.ndarray) -> float:
    if metric == "l2":
        return float(np.sum((raw - y) ** 2))
    if metric == "binary_logloss":
        return float(np.sum(np.logaddexp(0.0, np.where(y > 0, -raw, raw))))
    if metric == "multi_logloss":
        top = raw.max(axis=1)
        normaliser = top + np.log(np.exp(raw - top[:, None]).sum(axis=1))
        return float(np.sum(normaliser - raw[np.arange(len(y)), y.astype(np.int64)]))
    raise ValueError(f"no per-row loss for the metric {metric!r}")


def _input_counts(part: PartURL, *, config: PipelineConfig, few: float) -> dict[int, int] | None:
    """How often each distinct input row occurs in one part, read and checked on a
    worker; None once the part holds ``few`` distinct input rows or more: the data then
    splits by inputs, whatever the other parts hold."""
    hashes = training.input_hashes(_columns(part, config), config)
    distinct, counts = np.unique(hashes, return_counts=True)
    if len(distinct) >= few:
        return None
    return dict(zip(distinct.tolist(), counts.tolist(), strict=True))


def _plan(
    counts: Sequence[dict[int, int] | None], config: PipelineConfig
) -> tuple[training.SplitPlan | None, list[dict[int, int] | None]]:
    """The split plan, if the parts' ``counts`` decide it (None: by inputs, its count of
    distinct input rows still to be made), and each part's occurrence counts so far
    (the sum of the parts' before it) when the split is by occurrence, else None."""
    known = [part for part in counts if part is not None]
    if len(known) < len(counts):
        return None, [None] * len(counts)
    how = training.plan(len(set().union(*known)), config)
    if how.by != training.BY_OCCURRENCE:
        return how, [None] * len(counts)
    offsets: list[dict[int, int] | None] = []
    running: dict[int, int] = {}
    for part in known:
        offsets.append(dict(running))
        for key, count in part.items():
            running[key] = running.get(key, 0) + count
    return how, offsets


def _positions(
    columns: Mapping[str, np.ndarray], config: PipelineConfig, offsets: dict[int, int] | None
) -> np.ndarray:
    """Each row's position, by occurrence (counted on from ``offsets``) or by inputs."""
    counter = training.Occurrences(offsets) if offsets is not None else None
    return training.positions(columns, config, counter)


def _encoded(
    part: PartURL, offsets: dict[int, int] | None, *, config: PipelineConfig
) -> pd.DataFrame:
    """One part, read and checked on a worker: its encoded features, target, row hash
    (every column, for duplicates), input hash and side."""
    columns = _columns(part, config)
    schema = FeatureSchema.from_contract(config.contract, config.objective)
    frame = pd.DataFrame(schema.encode_columns(columns), columns=schema.names)
    frame[_TARGET] = schema.encode_target(columns[schema.target])
    frame[_ROW] = pd.util.hash_pandas_object(pd.DataFrame(dict(columns)), index=False).to_numpy(
        dtype=np.uint64
    )
    frame[_INPUT] = training.input_hashes(columns, config)
    frame[_SIDE] = training.side_of(_positions(columns, config, offsets), config)
    return frame


def _columns(part: PartURL, config: PipelineConfig) -> Mapping[str, np.ndarray]:
    # Imported here, on the worker: one process's training never needs fsspec.
    import fsspec

    try:
        with fsspec.open(part.url, "rb") as file:
            data = file.read()
    except FileNotFoundError as exc:
        raise DataUnavailable(f"snapshot part {part.url} is gone: {exc}") from exc
    if hashlib.sha256(data).hexdigest() != part.sha256:
        raise DataUnavailable(f"snapshot part {part.url} changed since it was validated")
    return table.TableColumns(pq.read_table(io.BytesIO(data)), config.contract)


def _examples(
    parts: Sequence[PartURL],
    offsets: Sequence[dict[int, int] | None],
    config: PipelineConfig,
    schema: FeatureSchema,
) -> list[dict[str, Any]]:
    """The first ``training.EXAMPLES`` hold-out samples (distinct rows, or by occurrence
    every row), in the snapshot's order, read one part at a time here."""
    found: list[dict[str, Any]] = []
    seen: set[int] = set()
    for part, offset in zip(parts, offsets, strict=True):
        columns = _columns(part, config)
        side = training.side_of(_positions(columns, config, offset), config)
        if offset is not None:
            held = np.flatnonzero(side == training.HOLDOUT).tolist()
        else:
            first = duplicates.first_occurrences(columns)
            rows = pd.util.hash_pandas_object(pd.DataFrame(dict(columns)), index=False).to_numpy(
                dtype=np.uint64
            )
            held = [
                row for row in first if side[row] == training.HOLDOUT and int(rows[row]) not in seen
            ]
            seen.update(int(rows[row]) for row in first)
        found += training.examples(columns, schema, np.asarray(held[: training.EXAMPLES]))
        if len(found) >= training.EXAMPLES:
            break
    return found[: training.EXAMPLES]


def _peaks(client: Any) -> list[dict[str, Any]]:
    """Each worker's peak resident memory since it started (its own: a worker is a
    spawned process, whose ``ru_maxrss`` would hold its parent's)."""
    peaks: Mapping[str, int] = client.run(memory.process_peak_bytes)
    return [{"worker": name, "peak_rss_bytes": int(peak)} for name, peak in sorted(peaks.items())]
