"""register: make a blessed candidate an immutable, numbered version with lineage."""

from __future__ import annotations

import hashlib

import lightgbm as lgb
import orjson

from modelrail import card
from modelrail.errors import IntegrityError
from modelrail.events import ModelEvaluated, ModelRegistered
from modelrail.registry import MODEL_FILE
from modelrail.stages import Outcome, StageContext
from modelrail.stages.evaluate import CHAMPION, REFERENCE
from modelrail.stages.validate import PROFILE


def handle(event: ModelEvaluated, *, ctx: StageContext) -> Outcome:
    store, model = ctx.runs.store, ctx.config.model_name
    model_text = store.read(ctx.runs.candidate_key(event.run_id, MODEL_FILE)).data
    if hashlib.sha256(model_text).hexdigest() != event.model_sha256:
        raise IntegrityError(f"candidate of {event.run_id} does not match its sha256")
    candidate = orjson.loads(
        store.read(ctx.runs.candidate_key(event.run_id, "candidate.json")).data
    )
    # The compiled predictors the training job built and verified (a candidate from
    # before they existed has none), each checked against the sha256 it recorded.
    compiled = candidate.get("compiled") or {"builds": [], "not_built": []}
    predictors = {}
    for build in compiled["builds"]:
        library = store.read(ctx.runs.candidate_key(event.run_id, build["file"])).data
        if hashlib.sha256(library).hexdigest() != build["sha256"]:
            raise IntegrityError(
                f"candidate of {event.run_id}: {build['file']} does not match its sha256"
            )
        predictors[build["file"]] = library
    fields = {
        "format": "lightgbm-text",
        "created_at": event.occurred_at,
        "features": candidate["features"],
        "best_iteration": candidate["best_iteration"],
        "params": candidate["params"],
        "train_metrics": candidate["train_metrics"],
        "metrics": event.metrics,
        "champion": event.champion,
        "verdict": event.verdict,
        "lineage": event.lineage,
        "examples": candidate["examples"],
        "compiled": compiled,
    }
    # The card shows the version number, known only once the registry has claimed it,
    # so the registry asks for the files with the number.
    booster = lgb.Booster(model_str=model_text.decode())
    importance = sorted(
        zip(
            booster.feature_name(),
            (float(v) for v in booster.feature_importance("gain")),
            strict=True,
        ),
        key=lambda item: -item[1],
    )
    # The version keeps the hold-out it was judged on (later gates' trusted set, written
    # by evaluate) and its training data's profile (later drift checks' baseline).
    reference = store.read(ctx.runs.snapshot_key(event.run_id, REFERENCE)).data
    data_profile = store.read(ctx.runs.snapshot_key(event.run_id, PROFILE)).data
    fields["diagnostics"] = ctx.runs.report(event.run_id, "evaluation")["diagnostics"]
    history = [
        {"version": v, "metrics": ctx.registry.manifest(model, v)["metrics"]}
        for v in ctx.registry.versions(model)
    ]
    version, manifest = ctx.registry.register(
        model,
        event.run_id,
        lambda number: {
            MODEL_FILE: model_text,
            "card.html": card.render(
                {**fields, "model": model, "version": number, "run_id": event.run_id},
                importance,
                [h for h in history if h["version"] < number],
            ),
            REFERENCE: reference,
            PROFILE: data_profile,
            **predictors,
        },
        fields,
    )
    ctx.registry.move_alias(model, CHAMPION, version)
    registered = ModelRegistered(
        run_id=event.run_id,
        causation_id=event.event_id,
        lineage=event.lineage,
        model=model,
        version=version,
        manifest_uri=ctx.registry.manifest_uri(model, version),
        manifest_sha256=hashlib.sha256(manifest).hexdigest(),
    )
    return Outcome(registered, {"model": model, "version": version})
