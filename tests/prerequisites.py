"""Tests that need a tool this machine may lack: skip with the reason, or fail under CI."""

from __future__ import annotations

import os

import pytest


def skip_or_fail(reason: str | None) -> None:
    """Nothing when ``reason`` is None; else skip (locally) or fail (``CI=true``)."""
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and what these tests need is missing:\n{reason}")
    pytest.skip(reason)
