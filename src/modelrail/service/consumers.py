"""Which service-layer call a consumer of the bus is: the notifier's ``consume`` for
the notifier, ``pipeline.consume`` for each stage. Every entry point (the in-process bus,
a Cloud Function) delivers through here."""

from __future__ import annotations

from modelrail.kernel.ports import Message
from modelrail.service import batch, notifications, pipeline
from modelrail.service.container import Container


def consume(container: Container, consumer: str, message: Message) -> None:
    """Deliver ``message`` to ``consumer`` (a subscription's, as topology.yaml names it)."""
    if consumer == notifications.CONSUMER:
        notifications.consume(container, message)
    elif consumer == batch.LISTENER:
        batch.launch(container, message)
    else:
        pipeline.consume(container, consumer, message)
