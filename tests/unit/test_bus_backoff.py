"""The in-process bus redelivers as Pub/Sub does: after the subscription's backoff,
exponential from its minimum to its maximum, other messages going first meanwhile."""

from __future__ import annotations

import pytest

from modelrail.adapters.local.inprocess import InProcessBus
from modelrail.kernel.ports import Message
from modelrail.settings.process import Settings
from modelrail.settings.topology import Topology
from tests.unit.conftest import ManualClock


@pytest.fixture
def topology(settings: Settings) -> Topology:
    return Topology.load(settings.topology_file())


@pytest.mark.fault
def test_a_failed_delivery_comes_back_after_the_topologys_backoff(topology: Topology) -> None:
    clock = ManualClock()
    bus = InProcessBus(topology, clock=clock, sleep=clock.sleep)
    delivered: list[tuple[str, int, float]] = []

    def flaky(message: Message) -> None:
        delivered.append((message.data.decode(), message.delivery_attempt, clock.now))
        if message.data == b"flaky" and message.delivery_attempt < 3:
            raise ConnectionError("the bucket is unreachable")

    bus.subscribe("model-trained--evaluate", flaky)
    bus.publish("model-trained", b"flaky", {})
    bus.publish("model-trained", b"steady", {})

    bus.run_until_idle()

    # The steady message went first while the flaky one waited; then 10 s, then 20 s.
    assert delivered == [
        ("flaky", 1, 0.0),
        ("steady", 1, 0.0),
        ("flaky", 2, 10.0),
        ("flaky", 3, 30.0),
    ]
    assert clock.slept == [10.0, 20.0]


def test_the_backoff_doubles_up_to_the_maximum(topology: Topology) -> None:
    [subscription] = [s for s in topology.subscriptions if s.name == "model-trained--evaluate"]
    waits = [subscription.backoff_s(attempt) for attempt in range(1, 9)]
    assert waits == [10, 20, 40, 80, 160, 320, 600, 600]  # topology.yaml: 10 s to 600 s
