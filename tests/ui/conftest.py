"""State for the UI's tests: an embedded home with a deployed run and a failed one."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson
import pytest

from modelrail.adapters.local.inprocess import InProcessBus
from modelrail.composition.bootstrap import bootstrap
from modelrail.kernel.events import DataUploaded
from modelrail.service.container import Container
from modelrail.settings.process import Settings
from tests.conftest import PENGUINS, installed, settings_env, vertex_config
from tests.fakes import FakeDeployer


@dataclasses.dataclass(frozen=True)
class History:
    home: Path
    container: Container
    deployed_run: str
    failed_run: str


def _upload(container: Container, name: str, data: bytes) -> str:
    store = container.storage.bucket(container.settings.data_bucket)
    generation = store.write(name, data)
    event = DataUploaded(bucket=store.bucket, name=name, generation=generation)
    bus = container.bus
    assert isinstance(bus, InProcessBus)
    bus.publish("data-uploaded", orjson.dumps(event.to_body()), {})
    bus.run_until_idle()
    [run] = [r for r in container.runs.runs() if r.trigger["key"] == event.idempotency_key]
    return run.run_id


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> History:
    """Filesystem buckets (what ``modelrail ui`` reads in embedded mode); the deployer is
    a fake because the UI reads the record of a deploy, never the staging server."""
    home = tmp_path_factory.mktemp("ui") / "home"
    # Vertex AI's Model Registry on: embedded mode keeps it in a directory, and the model
    # page shows where each version went there too.
    config = vertex_config(home.parent / "config")
    settings = Settings.from_env(settings_env(home))
    container = installed(
        bootstrap(settings, deployer_factory=lambda _model: FakeDeployer()), config
    )
    deployed = _upload(container, "uploads/penguins/penguins.csv", PENGUINS.read_bytes())
    broken = PENGUINS.read_text().replace(",year", ",season").encode()
    failed = _upload(container, "uploads/penguins/broken.csv", broken)
    return History(home, container, deployed, failed)
