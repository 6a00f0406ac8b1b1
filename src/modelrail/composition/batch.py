"""Batch prediction composed: the service's use case (``service.batch``) with the
staging service's predictor, over the buckets a ``gs://`` request names. The batch
job (``entry.batch_job``), ``modelrail predict`` and embedded mode's in-process job
launcher all run a request through here.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from modelrail.domain.registry import LoadedVersion
from modelrail.kernel.events import BatchRequested
from modelrail.service import batch
from modelrail.service.container import Container


def scorer_of(loaded: LoadedVersion, read: Callable[[str], bytes | None]) -> batch.Scorer:
    """The version's predictor as the staging service loads it: LightGBM's, or its
    compiled twin once that has answered the probe rows as LightGBM does."""
    from modelrail.serving.predictor import Predictor

    predictor = Predictor(loaded.model, loaded.version, loaded.manifest, loaded.model_text)
    predictor.use_compiled(read)
    booster: batch.Scorer = predictor.booster
    return booster


def bucket_parts(container: Container, uri: str) -> list[batch.Part]:
    """The parts a ``gs://bucket/prefix`` input names, in the bucket's store."""
    bucket, _, key = uri.removeprefix("gs://").partition("/")
    store = container.storage.bucket(bucket)
    return [
        batch.Part(store.uri(found), fmt, lambda found=found: store.open(found))  # type: ignore[misc]
        for found, fmt in batch.parts_of(store, key)
    ]


def bucket_output(container: Container, uri: str) -> batch.Output:
    """The output a ``gs://bucket/prefix`` names (a folder: its prefix ends in ``/``)."""
    bucket, _, key = uri.removeprefix("gs://").partition("/")
    prefix = key if not key or key.endswith("/") else f"{key}/"
    return batch.Output(container.storage.bucket(bucket), prefix, f"gs://{bucket}/{prefix}")


def run(container: Container, request: BatchRequested, task: batch.Task) -> dict[str, object]:
    """Score this task's share of the request."""
    if request.model is not None:
        container = container.for_model(request.model)
    version = batch.version_to_score(container, request.version, request.alias)
    return batch.predict(
        container,
        bucket_parts(container, request.input),
        bucket_output(container, request.output),
        version=version,
        scorer_of=scorer_of,
        explain=request.explain,
        threads=os.cpu_count() or 1,
        task=task,
        source=request.input,
    )
