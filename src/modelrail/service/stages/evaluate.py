"""evaluate: score the candidate and the champion, and apply the gate.

Twice: on this run's hold-out, and on the champion's reference set (the hold-out the
champion was judged on, kept with its version). Data under suspicion cannot be its
own referee: a candidate trained on corrupted labels scores like the champion on a
hold-out carrying the same corruption, but much worse on the champion's reference.
The change thresholds apply on both; the value thresholds on this run's hold-out.

The champion is read as the staging service reads a version: its manifest's signature
is verified before any sha256 in it is trusted, then every file it reads (the model,
the reference set) against that sha256. A champion whose files or manifest were
rewritten in the bucket ends the run as an ``IntegrityError``, never steering the gate.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import lightgbm as lgb
import numpy as np

from modelrail.domain import evaluation, training
from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset import snapshot
from modelrail.domain.dataset.checks import ParsedDataset
from modelrail.domain.dataset.table import TableColumns
from modelrail.domain.features import FeatureSchema
from modelrail.domain.registry import CHAMPION, REFERENCE_FILE, LoadedVersion, Registry
from modelrail.domain.runs import RunLog
from modelrail.kernel.errors import GateRejected
from modelrail.kernel.events import ModelEvaluated, ModelTrained
from modelrail.service.stages import Outcome


def handle(
    event: ModelTrained,
    *,
    config: PipelineConfig,
    runs: RunLog,
    registry: Registry,
) -> Outcome:
    store = runs.store
    model_text, candidate_meta = runs.candidate(event.run_id, event.model_sha256)
    # The hold-out alone, read part by part: evaluate never holds the whole snapshot.
    parts = snapshot.parts(store, event.dataset["snapshot"])
    uri = event.dataset["snapshot"]["uri"]
    held = training.holdout_rows(
        (snapshot.read_part(store, part, uri) for part in parts), config.contract, config
    )
    parsed = ParsedDataset(TableColumns(held, config.contract), held.num_rows)
    holdout = np.arange(held.num_rows)
    schema = FeatureSchema.from_dict(candidate_meta.features)
    candidate = lgb.Booster(model_str=model_text.decode())

    y_true, prediction = _predict(candidate, schema, parsed, holdout)
    metrics = evaluation.metrics(schema.objective, y_true, prediction)
    loaded = _champion_version(config, registry)
    champion = _champion(loaded, config, parsed, holdout)
    verdict = evaluation.judge(config.gate, metrics, champion["metrics"] if champion else None)
    reasons: list[str] = verdict.to_dict()["reasons"]
    blessed = verdict.blessed
    reference = _reference(config, registry, loaded, champion, candidate, schema)
    if champion is not None and reference is not None:
        # Kept with the version (and shown on its card): how it fared on the trusted set.
        champion = {
            **champion,
            "reference": {k: reference[k] for k in ("rows", "metrics", "champion_metrics")},
        }
        blessed = blessed and reference["verdict"]["blessed"]
        reasons += [
            f"on v{reference['version']}'s reference set ({reference['rows']} rows): {reason}"
            for reason in reference["verdict"]["reasons"]
        ]
    overall = {**verdict.to_dict(), "blessed": blessed, "reasons": reasons}
    report = {
        "run_id": event.run_id,
        "holdout_rows": len(holdout),
        "metrics": metrics,
        "champion": champion,
        "reference": reference,
        "verdict": overall,
        # For the model card: per class and the confusion matrix, or predicted vs actual.
        "diagnostics": evaluation.diagnostics(schema.objective, y_true, prediction, schema.classes),
    }
    report_uri = runs.save_report(event.run_id, "evaluation", report)
    # The rows it was judged on, for register to keep as the version's reference set.
    judged = snapshot.arrow(parsed, config.contract).take(holdout)
    store.write(
        runs.snapshot_key(event.run_id, REFERENCE_FILE),
        snapshot.encode(judged),
        content_type="application/vnd.apache.parquet",
    )
    if not blessed:
        raise GateRejected(
            "the gate rejected the candidate: " + "; ".join(reasons),
            {"report_uri": report_uri, **report},
        )
    evaluated = ModelEvaluated(
        run_id=event.run_id,
        causation_id=event.event_id,
        lineage={**event.lineage, "champion": champion and {"version": champion["version"]}},
        dataset=event.dataset,
        candidate_uri=event.candidate_uri,
        model_sha256=event.model_sha256,
        metrics=metrics,
        champion=champion,
        verdict=overall,
        report_uri=report_uri,
    )
    return Outcome(evaluated, {"metrics": metrics, "blessed": True})


def _predict(
    booster: lgb.Booster, schema: FeatureSchema, parsed: ParsedDataset, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The true targets of ``rows`` and ``booster``'s predictions for them (only those
    rows are encoded)."""
    columns = {name: parsed.columns[name][rows] for name in (*schema.names, schema.target)}
    y_true = schema.encode_target(columns[schema.target])
    return y_true, np.asarray(booster.predict(schema.encode_columns(columns)))


def _score(
    booster: lgb.Booster, schema: FeatureSchema, parsed: ParsedDataset, rows: np.ndarray
) -> dict[str, float]:
    return evaluation.metrics(schema.objective, *_predict(booster, schema, parsed, rows))


def _champion_version(config: PipelineConfig, registry: Registry) -> LoadedVersion | None:
    """The champion, its signed manifest verified and its model checked against it."""
    alias = registry.alias(config.model_name, CHAMPION)
    if alias is None:
        return None
    return registry.load(config.model_name, alias.version)


def _champion(
    loaded: LoadedVersion | None,
    config: PipelineConfig,
    parsed: ParsedDataset,
    holdout: np.ndarray,
) -> dict[str, Any] | None:
    """The champion's metrics on this hold-out, or None if there is none to compare."""
    if loaded is None:
        return None
    schema = FeatureSchema.from_dict(loaded.manifest.features)
    missing = [name for name in schema.names if name not in parsed.columns]
    if missing or schema.objective != config.objective:
        # The contract changed under the champion: it cannot score this data.
        return {
            "version": loaded.version,
            "metrics": None,
            "comparable": False,
            "why": f"champion needs columns {missing} / objective {schema.objective}",
        }
    booster = lgb.Booster(model_str=loaded.model_text.decode())
    return {
        "version": loaded.version,
        "metrics": _score(booster, schema, parsed, holdout),
        "comparable": True,
    }


def _reference(
    config: PipelineConfig,
    registry: Registry,
    loaded: LoadedVersion | None,
    champion: dict[str, Any] | None,
    candidate: lgb.Booster,
    schema: FeatureSchema,
) -> dict[str, Any] | None:
    """Candidate and champion on the champion's reference set, judged by the change
    thresholds; None for the first model or a champion without a comparable set."""
    if loaded is None or champion is None or not champion["comparable"]:
        return None
    version = loaded.version
    data = registry.file(loaded.manifest, REFERENCE_FILE)  # against the verified manifest
    if data is None:
        return None
    try:
        reference = snapshot.decode(data, config.contract)
    except KeyError:
        return None  # kept under another contract: its columns are not this data's
    rows = np.arange(reference.rows)
    candidate_metrics = _score(candidate, schema, reference, rows)
    champion_schema = FeatureSchema.from_dict(loaded.manifest.features)
    champion_booster = lgb.Booster(model_str=loaded.model_text.decode())
    champion_metrics = _score(champion_booster, champion_schema, reference, rows)
    changes_only = [dataclasses.replace(g, min=None, max=None) for g in config.gate]
    verdict = evaluation.judge(changes_only, candidate_metrics, champion_metrics)
    return {
        "version": version,
        "rows": reference.rows,
        "metrics": candidate_metrics,
        "champion_metrics": champion_metrics,
        "verdict": verdict.to_dict(),
    }
