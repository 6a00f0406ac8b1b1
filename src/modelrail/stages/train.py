"""train: fit a LightGBM candidate on the validated snapshot (runs inside the job)."""

from __future__ import annotations

import hashlib

from modelrail import training
from modelrail.config import canonical_json
from modelrail.dataset import snapshot
from modelrail.events import DatasetValidated, ModelTrained
from modelrail.stages import Outcome, StageContext


def handle(event: DatasetValidated, *, ctx: StageContext) -> Outcome:
    store = ctx.runs.store
    parsed = snapshot.read(store, event.dataset["snapshot"], ctx.config.contract)
    candidate = training.train(parsed, ctx.config)
    model_key = ctx.runs.candidate_key(event.run_id, "model.txt")
    store.write(model_key, candidate.model_text, content_type="text/plain")
    store.write(
        ctx.runs.candidate_key(event.run_id, "candidate.json"),
        canonical_json(
            {
                "best_iteration": candidate.best_iteration,
                "params": candidate.params,
                "features": candidate.schema.to_dict(),
                "train_metrics": candidate.train_metrics,
                "examples": candidate.examples,
            }
        ),
        content_type="application/json",
    )
    model_sha256 = hashlib.sha256(candidate.model_text).hexdigest()
    lineage = {
        **event.lineage,
        "candidate": {"model_sha256": model_sha256, "best_iteration": candidate.best_iteration},
    }
    trained = ModelTrained(
        run_id=event.run_id,
        causation_id=event.event_id,
        lineage=lineage,
        dataset=event.dataset,
        candidate_uri=store.uri(ctx.runs.candidate_key(event.run_id, "")),
        model_sha256=model_sha256,
        best_iteration=candidate.best_iteration,
        train_metrics=candidate.train_metrics,
    )
    return Outcome(trained, {"best_iteration": candidate.best_iteration, **candidate.train_metrics})
