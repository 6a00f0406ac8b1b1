"""The batch job: ``python -m modelrail.entry.batch_job``, the request in ``MODELRAIL_EVENT``.

A Cloud Run job (locally, subprocesses of the control plane) started by ``modelrail
predict --cloud`` with a ``batch-requested`` event. Each of its parallel tasks
(``CLOUD_RUN_TASK_INDEX`` of ``CLOUD_RUN_TASK_COUNT``) scores its share of the input's
parts (``service.batch``); the last to finish writes the drift report and the manifest.
A failure exits non-zero, and Cloud Run retries the task, which writes the same names.

Also the scorer both this job and ``modelrail predict`` load a version with: the
staging service's own predictor (``serving.predictor``), compiled where the version has
a compiled predictor that answers as LightGBM does.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable

import orjson

from modelrail.composition.bootstrap import bootstrap
from modelrail.domain.registry import LoadedVersion
from modelrail.kernel import logs
from modelrail.kernel.events import BatchRequested
from modelrail.service import batch
from modelrail.service.container import Container
from modelrail.settings.process import Settings

log = logging.getLogger("modelrail.batch")


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


def main() -> int:
    logs.configure()
    event = os.environ.get("MODELRAIL_EVENT")
    if not event:
        log.error("MODELRAIL_EVENT is empty: the job was started without a batch request")
        return 2
    request = BatchRequested.from_body(orjson.loads(event))
    task = batch.Task(
        int(os.environ.get("CLOUD_RUN_TASK_INDEX", "0")),
        int(os.environ.get("CLOUD_RUN_TASK_COUNT", "1")),
    )
    result = run(bootstrap(Settings.from_env()), request, task)
    log.info(
        f"batch {request.request_id}: task {task.index} of {task.count} done",
        extra={"fields": {"event": "batch_task_done", "request_id": request.request_id,
                          "finished": "scored" in result}},
    )  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
