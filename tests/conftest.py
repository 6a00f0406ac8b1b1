"""Fixtures shared by every test layer."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelrail.config import PipelineConfig, Settings

REPO = Path(__file__).resolve().parent.parent
PENGUINS = REPO / "data" / "penguins.csv"


def settings_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of an embedded modelrail rooted at ``home``."""
    return {
        "MODELRAIL_MODE": "embedded",
        "MODELRAIL_HOME": str(home),
        "MODELRAIL_CONFIG": str(REPO / "pipeline.toml"),
        "MODELRAIL_TOPOLOGY": str(REPO / "topology.yaml"),
        "MODELRAIL_CODE_VERSION": "test",
        **extra,
    }


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(settings_env(tmp_path / "home"))


@pytest.fixture(scope="session")
def config() -> PipelineConfig:
    return PipelineConfig.load(REPO / "pipeline.toml")


@pytest.fixture(scope="session")
def penguins_csv() -> bytes:
    return PENGUINS.read_bytes()
