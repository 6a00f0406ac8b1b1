"""What every emulator-backed test does first: skip with the reason, or fail under CI."""

from __future__ import annotations

import shutil

from modelrail.runtime.emulators import missing_emulators
from tests.prerequisites import skip_or_fail


def require_emulators(*, gcloud: bool = False) -> None:
    """Skip (locally) or fail (``CI=true``) when an emulator (or the gcloud CLI) is missing."""
    reason = missing_emulators()
    if reason is None and gcloud and shutil.which("gcloud") is None:
        reason = "the gcloud CLI is not installed (it ships with the Google Cloud SDK)"
    skip_or_fail(reason)
