"""What every emulator-backed test does first: skip with the reason, or fail under CI."""

from __future__ import annotations

import os

import pytest

from modelrail.runtime.emulators import missing_emulators


def require_emulators() -> None:
    """Skip (locally) or fail (``CI=true``) when an emulator is not installed."""
    reason = missing_emulators()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and the emulators are missing:\n{reason}")
    pytest.skip(reason)
