"""One EventBus contract, proven against every implementation.

The in-process bus (embedded mode) and Pub/Sub (Google's emulator here, the real
service in the cloud) must agree on what the pipeline relies on: a published message
reaches each subscription with its bytes and attributes, a failed delivery comes back
(at-least-once), and after the subscription's ``max_delivery_attempts`` a poison
message moves to the dead-letter topic instead of being retried forever.

Each implementation sits behind a small harness: ``consume`` attaches a handler to the
test subscription (raising = nack), ``settle`` lets the bus work until a condition on
what the test observed holds, and ``dead_letters`` reads the dead-letter topic's pull
subscription.
"""

from __future__ import annotations

import base64
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import orjson
import pytest
import urllib3

from modelrail.adapters.local.inprocess import InProcessBus
from modelrail.entry.functions import message_from_push
from modelrail.kernel.ports import EventBus, Message
from modelrail.kernel.processes import wait_until
from modelrail.localcloud.emulators import Emulators
from modelrail.localcloud.stack import bootstrap_pubsub
from modelrail.settings.topology import Subscription, Topology

MAX_ATTEMPTS = 5  # Pub/Sub's minimum for a dead-letter policy
EMULATOR_MARKS = (pytest.mark.emulator, pytest.mark.xdist_group("emulators"))

Handler = Callable[[Message], None]


def _topology(suffix: str) -> Topology:
    work, dead = f"orders{suffix}", f"dead-letter{suffix}"

    def subscription(name: str, topic: str, consumer: str | None) -> Subscription:
        # Backoff kept short so the contract runs in seconds; attempts as configured.
        return Subscription(name, topic, consumer, 10, MAX_ATTEMPTS, 0, 1)

    return Topology(
        topics=(work, dead),
        subscriptions=(
            subscription(f"{work}--worker", work, "worker"),
            subscription(f"{dead}--hold", dead, None),
        ),
        dead_letter_topic=dead,
        stages=(),
    )


class BusHarness(Protocol):
    bus: EventBus
    topic: str

    def consume(self, handler: Handler) -> None: ...

    def settle(self, condition: Callable[[], bool], timeout_s: float = 60.0) -> bool: ...

    def dead_letters(self) -> list[Message]: ...


class InProcessHarness:
    def __init__(self) -> None:
        self.topology = _topology("")
        self.bus = InProcessBus(self.topology)
        self.topic = self.topology.topics[0]

    def consume(self, handler: Handler) -> None:
        self.bus.subscribe(self.topology.subscriptions[0].name, handler)

    def settle(self, condition: Callable[[], bool], timeout_s: float = 60.0) -> bool:
        self.bus.run_until_idle()
        return condition()

    def dead_letters(self) -> list[Message]:
        return list(self.bus.held[self.topology.subscriptions[1].name])


class PubSubHarness:
    """PubSubBus publishing; the emulator pushing to a local functions-like endpoint."""

    def __init__(self, emulators: Emulators, monkeypatch: pytest.MonkeyPatch) -> None:
        from modelrail.adapters.google.pubsub import PubSubBus

        self.emulators = emulators
        self.topology = _topology(f"-{uuid.uuid4().hex[:8]}")
        self.topic = self.topology.topics[0]
        self._handler: Handler | None = None
        self._server = self._push_receiver()
        bootstrap_pubsub(
            emulators.pubsub_host,
            emulators.project,
            self.topology,
            {"worker": f"http://127.0.0.1:{self._server.server_address[1]}"},
        )
        with monkeypatch.context() as patch:
            # The client library reads the emulator's address once, at creation.
            patch.setenv("PUBSUB_EMULATOR_HOST", emulators.pubsub_host)
            bus = PubSubBus(emulators.project)
            assert bus.publisher is not None
        self.bus = bus
        self._dead: list[Message] = []
        self._http = urllib3.PoolManager()

    def _push_receiver(self) -> ThreadingHTTPServer:
        harness = self

        class Push(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
                status = 204
                try:
                    assert harness._handler is not None, "a push before consume()"
                    # The same decoding every Cloud Function entry point uses.
                    harness._handler(message_from_push(body))
                except Exception:  # a raising handler nacks, as functions-framework does
                    status = 500
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Push)
        server.daemon_threads = True
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        return server

    def consume(self, handler: Handler) -> None:
        self._handler = handler

    def settle(self, condition: Callable[[], bool], timeout_s: float = 60.0) -> bool:
        return wait_until(condition, timeout_s, interval_s=0.1)

    def dead_letters(self) -> list[Message]:
        hold = self.topology.subscriptions[1].name
        base = f"http://{self.emulators.pubsub_host}/v1/projects/{self.emulators.project}"
        response = self._http.request(
            "POST",
            f"{base}/subscriptions/{hold}:pull",
            body=orjson.dumps({"maxMessages": 10, "returnImmediately": True}),
            headers={"Content-Type": "application/json"},
        )
        received = orjson.loads(response.data).get("receivedMessages", [])
        if received:
            self._http.request(
                "POST",
                f"{base}/subscriptions/{hold}:acknowledge",
                body=orjson.dumps({"ackIds": [r["ackId"] for r in received]}),
                headers={"Content-Type": "application/json"},
            )
        for item in received:
            message = item["message"]
            self._dead.append(
                Message(
                    base64.b64decode(message.get("data", "")),
                    message.get("attributes", {}),
                    message["messageId"],
                )
            )
        return list(self._dead)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(params=[pytest.param("in-process"), pytest.param("pubsub", marks=EMULATOR_MARKS)])
def harness(request: pytest.FixtureRequest) -> Iterator[BusHarness]:
    if request.param == "in-process":
        yield InProcessHarness()
        return
    pubsub = PubSubHarness(
        request.getfixturevalue("emulators"), request.getfixturevalue("monkeypatch")
    )
    yield pubsub
    pubsub.close()


def test_a_message_arrives_with_its_bytes_and_attributes(harness: BusHarness) -> None:
    received: list[Message] = []
    harness.consume(received.append)

    message_id = harness.bus.publish(harness.topic, b'{"n": 1}', {"event_type": "order-placed"})

    assert harness.settle(lambda: len(received) >= 1)
    assert message_id
    assert received[0].data == b'{"n": 1}'
    assert dict(received[0].attributes) == {"event_type": "order-placed"}
    assert received[0].message_id == message_id


def test_a_failed_delivery_is_redelivered_until_it_succeeds(harness: BusHarness) -> None:
    attempts: list[Message] = []
    done: list[Message] = []

    def flaky(message: Message) -> None:
        attempts.append(message)
        if len(attempts) < 3:
            raise ConnectionError("a dependency is down")
        done.append(message)

    harness.consume(flaky)
    message_id = harness.bus.publish(harness.topic, b"payload", {})

    assert harness.settle(lambda: len(done) == 1)
    assert [m.message_id for m in attempts] == [message_id] * 3
    assert {m.data for m in attempts} == {b"payload"}
    assert harness.dead_letters() == []


def test_a_poison_message_is_dead_lettered_after_max_attempts(harness: BusHarness) -> None:
    attempts: list[Message] = []

    def poisoned(message: Message) -> None:
        attempts.append(message)
        raise RuntimeError("this message can never be processed")

    harness.consume(poisoned)
    message_id = harness.bus.publish(harness.topic, b"poison", {"run_id": "r-1"})

    assert harness.settle(lambda: len(harness.dead_letters()) == 1)
    [dead] = harness.dead_letters()
    assert dead.data == b"poison"
    assert dead.attributes["run_id"] == "r-1"
    assert dead.attributes["CloudPubSubDeadLetterSourceDeliveryCount"] == str(MAX_ATTEMPTS)
    assert dead.attributes["CloudPubSubDeadLetterSourceSubscription"].endswith("--worker")
    assert len(attempts) == MAX_ATTEMPTS
    assert {m.message_id for m in attempts} == {message_id}
