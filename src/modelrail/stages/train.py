"""train: fit a LightGBM candidate on the validated dataset (runs inside the job)."""

from __future__ import annotations

import hashlib

from modelrail import training
from modelrail.config import canonical_json
from modelrail.dataset import checks
from modelrail.errors import DataUnavailable, NotFound
from modelrail.events import DatasetValidated, ModelTrained
from modelrail.ports import Storage
from modelrail.stages import Outcome, StageContext


def read_dataset(storage: Storage, dataset: dict[str, object]) -> bytes:
    """The exact bytes validate checked (same generation, same sha256)."""
    try:
        blob = storage.bucket(str(dataset["bucket"])).read(
            str(dataset["key"]), generation=int(str(dataset["generation"]))
        )
    except NotFound as exc:
        raise DataUnavailable(f"dataset {dataset['uri']} is gone: {exc}") from exc
    if hashlib.sha256(blob.data).hexdigest() != dataset["sha256"]:
        raise DataUnavailable(f"dataset {dataset['uri']} changed since it was validated")
    return blob.data


def handle(event: DatasetValidated, *, ctx: StageContext) -> Outcome:
    data = read_dataset(ctx.storage, dict(event.dataset))
    parsed = checks.load(data, ctx.config.contract)
    candidate = training.train(parsed, ctx.config)
    store = ctx.runs.store
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
