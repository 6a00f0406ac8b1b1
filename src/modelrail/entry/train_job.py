"""The training job: ``python -m modelrail.entry.train_job`` with the event in ``MODELRAIL_EVENT``.

Launched by the ``launch_training`` function as a Cloud Run job execution (locally: a
subprocess or in-process). It publishes ``model-trained`` (or ``pipeline-failed``)
itself; a transient error exits non-zero so Cloud Run retries the task.
"""

from __future__ import annotations

import os
import sys

from modelrail.entry.functions import run_job
from modelrail.kernel import logs


def main() -> int:
    logs.configure()
    return run_job("train", os.environ.get("MODELRAIL_EVENT"))


if __name__ == "__main__":
    sys.exit(main())
