"""The batch job: ``python -m modelrail.entry.batch_job``, the request in ``MODELRAIL_EVENT``.

A Cloud Run job (locally, subprocesses of the control plane) started with a
``batch-requested`` event by the ``launch_batch`` listener (``service.batch.launch``),
which ``modelrail predict --cloud`` or anyone may publish to. Each of its parallel tasks
(``CLOUD_RUN_TASK_INDEX`` of ``CLOUD_RUN_TASK_COUNT``) scores its share of the input's
parts (``service.batch``); the last to finish writes the drift report and the manifest.
A failure exits non-zero, and Cloud Run retries the task, which writes the same names.
"""

from __future__ import annotations

import logging
import os
import sys

import orjson

from modelrail.composition.batch import run
from modelrail.composition.bootstrap import bootstrap
from modelrail.kernel import logs
from modelrail.kernel.events import BatchRequested
from modelrail.service import batch
from modelrail.settings.process import Settings

log = logging.getLogger("modelrail.batch")


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
