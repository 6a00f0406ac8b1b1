"""train: fit a LightGBM candidate on the validated snapshot (runs inside the job), and
build its compiled predictor where the compiler and LightGBM are (``builder.build``)."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import lightgbm as lgb

from modelrail.domain import distributed, training
from modelrail.domain.config import PipelineConfig
from modelrail.domain.dataset import snapshot
from modelrail.domain.decoding import RequestDecoder
from modelrail.domain.registry import MODEL_FILE
from modelrail.domain.runs import CandidateRecord, RunLog
from modelrail.kernel.events import DatasetValidated, ModelTrained
from modelrail.kernel.ports import BlobStore, DaskClusters
from modelrail.native import builder, loader
from modelrail.service.stages import Outcome

log = logging.getLogger(__name__)
# More than any probe body of the body reader holds (``reader_c.probe_bodies``).
_PROBE_INSTANCES = 1_000_000


def handle(
    event: DatasetValidated,
    *,
    config: PipelineConfig,
    runs: RunLog,
    compiler: str | None,
    clusters: DaskClusters,
) -> Outcome:
    store = runs.store
    parts = snapshot.parts(store, event.dataset["snapshot"])
    # What one process would need to train on it, measured per value of the snapshot.
    values = sum(part.rows for part in parts) * len(config.contract.columns)
    workers: list[dict[str, Any]] = []
    if config.engine.chooses_dask(values * training.LOCAL_PEAK_BYTES_PER_VALUE):
        urls = [distributed.PartURL(_url(store, p.key), p.sha256, p.rows) for p in parts]
        with clusters.client(config.engine.scheduler, config.engine.workers) as client:
            on_cluster = distributed.train(client, urls, config)
        candidate, workers, engine = on_cluster.candidate, on_cluster.workers, "dask"
    else:
        uri = event.dataset["snapshot"]["uri"]
        parsed = snapshot.read(store, parts, uri, config.contract)
        candidate, engine = training.train(parsed, config), "local"
    model_key = runs.candidate_key(event.run_id, MODEL_FILE)
    store.write(model_key, candidate.model_text, content_type="text/plain")
    predictors = _compile(candidate, compiler)
    for predictor in predictors.predictors:
        store.write(
            runs.candidate_key(event.run_id, predictor.build.file),
            predictor.library,
            content_type="application/octet-stream",
        )
    runs.save_candidate(
        event.run_id,
        CandidateRecord(
            best_iteration=candidate.best_iteration,
            params=candidate.params,
            features=candidate.schema.to_dict(),
            train_metrics=candidate.train_metrics,
            examples=candidate.examples,
            compiled=predictors.record(),
            split=candidate.split.to_json(),
            cross_validation=(
                candidate.cross_validation.to_json() if candidate.cross_validation else None
            ),
        ),
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
    output = {
        "engine": engine,
        "split": candidate.split.by,
        "judged_by": (
            candidate.cross_validation.why if candidate.cross_validation else "the hold-out"
        ),
        "best_iteration": candidate.best_iteration,
        **candidate.train_metrics,
        "compiled": [predictor.build.name for predictor in predictors.predictors],
        "not_compiled": list(predictors.not_built),
    }
    return Outcome(trained, output, resources={"workers": workers} if workers else None)


def _url(store: BlobStore, key: str) -> str:
    """Where a Dask worker opens a snapshot part: the file of a filesystem bucket (a
    cluster on this machine), else the object's ``gs://`` URI."""
    path = store.local_path(key)
    return path.as_uri() if path is not None else store.uri(key)


def _compile(candidate: training.Candidate, compiler: str | None) -> builder.Built:
    """The candidate's compiled predictors, checked against LightGBM's own ``Booster``;
    none (with the reason logged and recorded) is never a failed run."""
    if compiler is None:
        built = builder.Built((), ("no compiler configured (MODELRAIL_COMPILER)",))
    else:
        # The body reader is held to the service's own decoder of request bodies.
        decoder = RequestDecoder(candidate.schema, max_instances=_PROBE_INSTANCES)
        built = builder.build(
            candidate.model_text,
            candidate.best_iteration,
            lgb.Booster(model_str=candidate.model_text.decode()),
            candidate.schema.encode_records(candidate.examples).tolist(),
            compiler,
            loader.Reading(candidate.schema, candidate.examples, decoder.plain_matrix),
        )
    names = ", ".join(predictor.build.file for predictor in built.predictors) or "none"
    if built.not_built:
        log.warning(
            f"compiled predictors: {names}; not built: {'; '.join(built.not_built)}; "
            f"body reader: {built.reader}"
        )
    else:
        log.info(
            f"compiled predictors: {names} (identical to LightGBM on the probes); "
            f"body reader: {built.reader}"
        )
    return built
