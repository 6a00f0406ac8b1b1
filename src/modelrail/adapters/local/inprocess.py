"""The in-process bus and job launcher: embedded mode's event graph in one process.

``InProcessBus`` keeps Pub/Sub's delivery contract: every subscription of a topic gets
its own copy (fan-out), a handler that raises gets the message again (at-least-once),
and after the subscription's ``max_delivery_attempts`` the message moves to the
dead-letter topic with the attributes Pub/Sub adds, and is kept on disk for a person
to look at. Delivery is driven explicitly with ``run_until_idle`` so tests and the
CLI wait on state, never on a guess.

A failed delivery comes back after the subscription's retry policy says, as on
Pub/Sub: exponential backoff from ``minimum_backoff`` doubling to ``maximum_backoff``
(10 s, 20 s, 40 s, 80 s with the topology's 10 s and five attempts), meanwhile other
messages go first. Time is read and waited on only through the bus's ``clock`` and
``sleep`` (``time.monotonic`` and ``time.sleep`` unless given), so a unit test hands
it a clock that jumps instead of waiting.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from modelrail.kernel.events import utcnow
from modelrail.kernel.ports import JobState, Message
from modelrail.settings.topology import Subscription, Topology

log = logging.getLogger(__name__)

Handler = Callable[[Message], object]


@dataclasses.dataclass
class _Delivery:
    subscription: Subscription
    message: Message
    due: float = 0.0  # the bus's clock reading before which it is not delivered


class InProcessBus:
    """At-least-once, fan-out, dead-lettering bus driven by ``run_until_idle``."""

    def __init__(
        self,
        topology: Topology,
        dead_letter_path: Path | None = None,
        *,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.topology = topology
        self.dead_letter_path = dead_letter_path
        self.clock = clock if clock is not None else time.monotonic
        self.sleep = sleep if sleep is not None else time.sleep
        self._handlers: dict[str, Handler] = {}
        self._queue: collections.deque[_Delivery] = collections.deque()
        self.history: list[tuple[str, Message]] = []  # every publish, in order
        self.held: dict[str, list[Message]] = collections.defaultdict(list)

    def subscribe(self, subscription: str, handler: Handler) -> None:
        """Push deliveries of ``subscription`` to ``handler``."""
        if subscription not in {s.name for s in self.topology.subscriptions}:
            raise KeyError(f"no subscription {subscription!r} in the topology")
        self._handlers[subscription] = handler

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        if topic not in self.topology.topics:
            raise KeyError(f"no topic {topic!r} in the topology")
        message_id = uuid.uuid4().hex
        self.history.append((topic, Message(data, dict(attributes), message_id)))
        for subscription in self.topology.consumers_of(topic):
            message = Message(data, dict(attributes), message_id, 1, utcnow(), topic)
            if subscription.consumer is None or subscription.name not in self._handlers:
                self.held[subscription.name].append(message)
            else:
                self._queue.append(_Delivery(subscription, message))
        return message_id

    def drain(self) -> None:
        """Deliver every outstanding message: in embedded mode the run happens here."""
        self.run_until_idle()

    def run_until_idle(self, max_deliveries: int = 10_000) -> int:
        """Deliver until no message is outstanding; return how many were delivered.

        A failed delivery waits out its subscription's backoff at the back of the queue
        while the other messages go first; when only waiting deliveries are left, the
        bus sleeps until the first is due.
        """
        delivered = 0
        while self._queue:
            if delivered >= max_deliveries:
                raise RuntimeError(f"bus still busy after {max_deliveries} deliveries")
            delivery = self._next_due()
            delivered += 1
            subscription, message = delivery.subscription, delivery.message
            try:
                self._handlers[subscription.name](message)
            except Exception:
                log.exception(
                    "delivery %d of %s to %s failed",
                    message.delivery_attempt,
                    message.message_id,
                    subscription.name,
                )
                if message.delivery_attempt >= subscription.max_delivery_attempts:
                    self._dead_letter(subscription, message)
                else:
                    attempt = dataclasses.replace(
                        message, delivery_attempt=message.delivery_attempt + 1
                    )
                    due = self.clock() + subscription.backoff_s(message.delivery_attempt)
                    self._queue.append(_Delivery(subscription, attempt, due))
        return delivered

    def _next_due(self) -> _Delivery:
        """Take the first delivery that is due, sleeping until one is if none is."""
        now = self.clock()
        for index, delivery in enumerate(self._queue):
            if delivery.due <= now:
                del self._queue[index]
                return delivery
        index = min(range(len(self._queue)), key=lambda i: self._queue[i].due)
        first = self._queue[index]
        self.sleep(max(first.due - now, 0.0))
        del self._queue[index]
        return first

    def _dead_letter(self, subscription: Subscription, message: Message) -> None:
        attributes = {
            **message.attributes,
            "CloudPubSubDeadLetterSourceSubscription": subscription.name,
            "CloudPubSubDeadLetterSourceDeliveryCount": str(message.delivery_attempt),
        }
        log.error("dead-lettering %s from %s", message.message_id, subscription.name)
        if self.dead_letter_path is not None:
            self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
            with self.dead_letter_path.open("ab") as handle:
                record: dict[str, Any] = {
                    "message_id": message.message_id,
                    "attributes": attributes,
                    "data": message.data.decode(errors="replace"),
                    "dead_lettered_at": utcnow(),
                }
                handle.write(orjson.dumps(record) + b"\n")
        self.publish(self.topology.dead_letter_topic, message.data, attributes)


class InProcessLauncher:
    """Runs a job (training; validation at size) in this process, to its end:
    ``run_job(job, event_json)``; the job then publishes its own event."""

    def __init__(self, run_job: Callable[[str, bytes], object]) -> None:
        self._run_job = run_job
        self._finished: dict[str, JobState] = {}

    def launch(self, job: str, event_json: bytes) -> str:
        execution = f"{job}-{uuid.uuid4().hex[:8]}"
        try:
            self._run_job(job, event_json)
        except Exception as exc:
            self._finished[execution] = JobState("failed", f"{type(exc).__name__}: {exc}")
            raise
        self._finished[execution] = JobState("succeeded")
        return execution

    def state(self, execution: str) -> JobState:
        """Executions run to their end inside ``launch``: one this process did not run
        belonged to a process that is gone."""
        return self._finished.get(execution, JobState("unknown", "not run by this process"))
