"""evaluate: score the candidate and the champion on the same hold-out; apply the gate."""

from __future__ import annotations

import hashlib
from typing import Any

import lightgbm as lgb
import numpy as np
import orjson

from modelrail import evaluation, training
from modelrail.dataset import checks
from modelrail.errors import GateRejected, IntegrityError
from modelrail.events import ModelEvaluated, ModelTrained
from modelrail.features import FeatureSchema
from modelrail.stages import Outcome, StageContext
from modelrail.stages.train import read_dataset

CHAMPION = "champion"


def handle(event: ModelTrained, *, ctx: StageContext) -> Outcome:
    config, store = ctx.config, ctx.runs.store
    model_text = store.read(ctx.runs.candidate_key(event.run_id, "model.txt")).data
    if hashlib.sha256(model_text).hexdigest() != event.model_sha256:
        raise IntegrityError(f"candidate of {event.run_id} does not match its sha256")
    candidate_meta = orjson.loads(
        store.read(ctx.runs.candidate_key(event.run_id, "candidate.json")).data
    )
    parsed = checks.load(read_dataset(ctx.storage, dict(event.dataset)), config.contract)
    holdout = training.split(parsed.rows, config).holdout
    schema = FeatureSchema.from_dict(candidate_meta["features"])
    y_true = schema.encode_target(parsed.columns[schema.target])[holdout]

    metrics = _score(model_text, schema, parsed.columns, holdout, y_true)
    champion = _champion(ctx, parsed.columns, holdout, y_true)
    verdict = evaluation.judge(config.gate, metrics, champion["metrics"] if champion else None)
    report = {
        "run_id": event.run_id,
        "holdout_rows": len(holdout),
        "metrics": metrics,
        "champion": champion,
        "verdict": verdict.to_dict(),
    }
    report_uri = ctx.runs.save_report(event.run_id, "evaluation", report)
    if not verdict.blessed:
        reasons = verdict.to_dict()["reasons"]
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
        verdict=verdict.to_dict(),
        report_uri=report_uri,
    )
    return Outcome(evaluated, {"metrics": metrics, "blessed": True})


def _score(
    model_text: bytes,
    schema: FeatureSchema,
    columns: Any,
    holdout: np.ndarray,
    y_true: np.ndarray,
) -> dict[str, float]:
    booster = lgb.Booster(model_str=model_text.decode())
    features = schema.encode_columns(columns)[holdout]
    return evaluation.metrics(schema.objective, y_true, np.asarray(booster.predict(features)))


def _champion(
    ctx: StageContext, columns: Any, holdout: np.ndarray, y_true: np.ndarray
) -> dict[str, Any] | None:
    """The champion's metrics on this hold-out, or None if there is none to compare."""
    model = ctx.config.model_name
    alias = ctx.registry.alias(model, CHAMPION)
    if alias is None:
        return None
    loaded = ctx.registry.load(model, alias.version)  # sha256-checked before parsing
    schema = FeatureSchema.from_dict(loaded.manifest["features"])
    missing = [name for name in schema.names if name not in columns]
    if missing or schema.objective != ctx.config.objective:
        # The contract changed under the champion: it cannot score this data.
        return {
            "version": alias.version,
            "metrics": None,
            "comparable": False,
            "why": f"champion needs columns {missing} / objective {schema.objective}",
        }
    return {
        "version": alias.version,
        "metrics": _score(loaded.model_text, schema, columns, holdout, y_true),
        "comparable": True,
    }
