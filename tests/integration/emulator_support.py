"""What every emulator-backed test does first: skip with the reason, or fail under CI."""

from __future__ import annotations

import os
import shutil

import pytest

from modelrail.runtime.emulators import missing_emulators


def require_emulators(*, gcloud: bool = False) -> None:
    """Skip (locally) or fail (``CI=true``) when an emulator (or the gcloud CLI) is missing."""
    reason = missing_emulators()
    if reason is None and gcloud and shutil.which("gcloud") is None:
        reason = "the gcloud CLI is not installed (it ships with the Google Cloud SDK)"
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and what these tests need is missing:\n{reason}")
    pytest.skip(reason)
