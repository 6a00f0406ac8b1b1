"""train: fit a LightGBM candidate on the validated snapshot (runs inside the job)."""

from __future__ import annotations

import hashlib

from modelrail import training
from modelrail.config import PipelineConfig, canonical_json
from modelrail.dataset import snapshot
from modelrail.events import DatasetValidated, ModelTrained
from modelrail.registry import MODEL_FILE
from modelrail.runs import RunLog
from modelrail.stages import Outcome


def handle(event: DatasetValidated, *, config: PipelineConfig, runs: RunLog) -> Outcome:
    store = runs.store
    parsed = snapshot.read(store, event.dataset["snapshot"], config.contract)
    candidate = training.train(parsed, config)
    model_key = runs.candidate_key(event.run_id, MODEL_FILE)
    store.write(model_key, candidate.model_text, content_type="text/plain")
    store.write(
        runs.candidate_key(event.run_id, "candidate.json"),
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
        candidate_uri=store.uri(runs.candidate_key(event.run_id, "")),
        model_sha256=model_sha256,
        best_iteration=candidate.best_iteration,
        train_metrics=candidate.train_metrics,
    )
    return Outcome(trained, {"best_iteration": candidate.best_iteration, **candidate.train_metrics})
