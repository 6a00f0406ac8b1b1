"""Fixtures shared by the contract suites: every port implementation, side by side.

The Google Cloud implementations run against Google's Pub/Sub emulator and
fake-gcs-server, started once per test session on free 127.0.0.1 ports. Where the
emulators are missing these tests skip with the reason; under ``CI=true`` they fail.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelrail.localcloud.emulators import Emulators
from tests.integration.emulator_support import require_emulators

PROJECT = "modelrail-contract"


@pytest.fixture(scope="session")
def emulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulators]:
    require_emulators()
    workdir: Path = tmp_path_factory.mktemp("contract-emulators")
    with Emulators.start(workdir, PROJECT) as started:
        yield started
