"""The real pipeline on fakes: in-memory buckets, the in-process bus, a fake deployer."""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

import orjson
import pytest

from modelrail.adapters.local.inprocess import InProcessBus
from modelrail.composition.bootstrap import bootstrap
from modelrail.domain.runs import RunSummary
from modelrail.kernel.events import DataUploaded, RetrainRequested
from modelrail.service.container import Container
from modelrail.settings.process import Settings
from tests.conftest import installed
from tests.fakes import FakeDeployer, InMemoryStorage


class ManualClock:
    """A clock that jumps: ``sleep`` moves it on at once and remembers how long it was
    asked to wait, so a bus following Pub/Sub's backoff runs in milliseconds."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@dataclasses.dataclass
class Harness:
    container: Container
    storage: InMemoryStorage
    deployer: FakeDeployer
    clock: ManualClock = dataclasses.field(default_factory=ManualClock)

    def __post_init__(self) -> None:
        self.bus.clock, self.bus.sleep = self.clock, self.clock.sleep

    @property
    def bus(self) -> InProcessBus:
        bus = self.container.bus
        assert isinstance(bus, InProcessBus)
        return bus

    @property
    def model(self) -> str:
        return self.container.config.model_name

    def upload(self, data: bytes, name: str = "uploads/penguins/data.csv") -> DataUploaded:
        store = self.storage.bucket(self.container.settings.data_bucket)
        generation = store.write(name, data)
        event = DataUploaded(bucket=store.bucket, name=name, generation=generation)
        self.deliver_upload(event)
        return event

    def deliver_upload(self, event: DataUploaded) -> None:
        self.bus.publish(
            "data-uploaded", orjson.dumps(event.to_body()), {"eventType": "OBJECT_FINALIZE"}
        )

    def retrain(self, request_id: str | None = None, **fields: Any) -> RetrainRequested:
        request = RetrainRequested(request_id=request_id or uuid.uuid4().hex, **fields)
        self.bus.publish("retrain-requested", orjson.dumps(request.to_body()), {})
        return request

    def run(self) -> int:
        return self.bus.run_until_idle()

    def runs(self) -> list[RunSummary]:
        return self.container.runs.runs()

    def published(self, topic: str) -> list[dict[str, Any]]:
        return [orjson.loads(m.data) for t, m in self.bus.history if t == topic]


@pytest.fixture
def harness(settings: Settings) -> Harness:
    storage = InMemoryStorage(settings.data_bucket, settings.artifact_bucket)
    deployer = FakeDeployer()
    container = installed(
        bootstrap(
            settings, storage_factory=lambda: storage, deployer_factory=lambda _model: deployer
        )
    )
    return Harness(container, storage, deployer)
