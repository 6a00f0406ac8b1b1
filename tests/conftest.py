"""Fixtures shared by every test layer."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from modelrail.domain.config import PipelineConfig
from modelrail.domain.models import Definition
from modelrail.service.container import Container
from modelrail.settings.process import Settings

REPO = Path(__file__).resolve().parent.parent
PENGUINS = REPO / "data" / "penguins.csv"


def pytest_configure(config: pytest.Config) -> None:
    """A run stopped by SIGTERM (a CI job's timeout, ``kill``) ends as on Ctrl-C: the
    fixtures' finalizers run, and the stacks, emulators and servers they started are
    stopped instead of left running in their own sessions. Under xdist the controller
    passes the signal on to its workers, each of which ends so, and waits for them:
    interrupted itself, it would tear the workers down in the middle of their teardown."""
    controller = bool(config.getoption("numprocesses", None)) and not hasattr(config, "workerinput")
    signal.signal(signal.SIGTERM, _pass_on if controller else _interrupted)


def _interrupted(signum: int, frame: object) -> None:
    # Once: a second SIGTERM must not cut the teardown short (it would kill a
    # `modelrail down` midway).
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(f"signal {signum}")


def _pass_on(signum: int, frame: object) -> None:
    """The xdist controller's SIGTERM: to each worker (its children, which Linux's /proc
    lists), once; where nothing lists them, it ends as a worker does."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        _interrupted(signum, frame)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for children in tasks.glob("*/children"):
        for pid in children.read_text().split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)


# Tests wait on state, and the deadline only bounds a hang: these machines' speed swings
# 4-8x within an hour, so a deadline close to the usual time fails a healthy run. It
# stays below pytest-timeout's 300 s so the failure names what was awaited.
STATE_DEADLINE_S = 180.0


def wait_for(predicate: Callable[[], bool], what: str, timeout_s: float = STATE_DEADLINE_S) -> None:
    """Poll ``predicate`` until it holds; fail naming ``what`` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.02)  # polling interval, not a wait for state


def penguin_rows() -> list[dict[str, Any]]:
    """The bundled penguins as a client sends them: every feature, missing as None."""
    import pandas as pd

    frame = pd.read_csv(PENGUINS).drop(columns=["species"])
    return [
        {k: (None if pd.isna(v) else v) for k, v in row.items()}
        for row in frame.to_dict(orient="records")
    ]


def settings_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of an embedded modelrail rooted at ``home``."""
    return {
        "MODELRAIL_MODE": "embedded",
        "MODELRAIL_HOME": str(home),
        "MODELRAIL_TOPOLOGY": str(REPO / "topology.yaml"),
        "MODELRAIL_CODE_VERSION": "test",
        **extra,
    }


def installed(container: Container, config_path: Path = REPO / "pipeline.toml") -> Container:
    """``container`` with the model ``config_path`` defines installed (as ``modelrail
    add`` installs it), acting for that model."""
    definition = Definition.from_files(config_path)
    container.models.add(definition)
    return container.for_model(definition.name)


def install(env: dict[str, str], config_path: Path = REPO / "pipeline.toml") -> None:
    """Install the model ``config_path`` defines where ``env`` (``settings_env``) keeps
    its state, as ``modelrail add`` does."""
    from modelrail.composition.bootstrap import bootstrap

    installed(bootstrap(Settings.from_env(env)), config_path)


def vertex_config(directory: Path) -> Path:
    """A copy of the bundled pipeline.toml in ``directory`` with ``[vertex]
    model_registry`` on (and its contract named by absolute path)."""
    text = (REPO / "pipeline.toml").read_text()
    for old, new in (
        ('contract = "schemas/', f'contract = "{REPO}/schemas/'),
        ("model_registry = false", "model_registry = true"),
    ):
        assert old in text
        text = text.replace(old, new, 1)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pipeline.toml").write_text(text)
    return directory / "pipeline.toml"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env(settings_env(tmp_path / "home"))


@pytest.fixture(scope="session")
def config() -> PipelineConfig:
    return PipelineConfig.load(REPO / "pipeline.toml")


@pytest.fixture(scope="session")
def penguins_csv() -> bytes:
    return PENGUINS.read_bytes()
