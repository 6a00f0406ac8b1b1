"""The validate job: ``python -m modelrail.entry.validate_job``, the trigger in ``MODELRAIL_EVENT``.

Launched by the validate function (``service.handoff``) as a Cloud Run job execution
when an upload is larger than ``MODELRAIL_VALIDATE_IN_JOB_ABOVE_MB`` (locally: a
subprocess of the control plane, or in-process). It runs the validate stage itself,
never handing it off again, and records and publishes ``dataset-validated`` (or
``pipeline-failed``) as the function would; a transient error exits non-zero so Cloud
Run retries the task.
"""

from __future__ import annotations

import os
import sys

from modelrail.entry.functions import run_job
from modelrail.kernel import logs


def main() -> int:
    logs.configure()
    return run_job("validate", os.environ.get("MODELRAIL_EVENT"))


if __name__ == "__main__":
    sys.exit(main())
