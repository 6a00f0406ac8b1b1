"""Adapters from the outside world's envelopes to ``pipeline.consume``.

A Cloud Function receives a CloudEvent whose data is Pub/Sub's push body
(``{"message": {"data": base64, "attributes": ..., "messageId": ...}}``), in the cloud
and from the emulator alike. The container is built once per instance, lazily, on the
first event: nothing happens at import time.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from modelrail.composition.bootstrap import bootstrap
from modelrail.kernel import logs
from modelrail.kernel.ports import Message
from modelrail.service import consumers, pipeline
from modelrail.service.container import Container
from modelrail.settings.process import Settings

if TYPE_CHECKING:
    from cloudevents.http.event import CloudEvent

log = logging.getLogger(__name__)


@cache
def container() -> Container:
    return bootstrap(Settings.from_env())


def message_from_push(
    data: Mapping[str, Any] | None,
    delivery_attempt: int | None = None,
    topic: str | None = None,
) -> Message:
    """The Pub/Sub message inside a push body (as functions-framework hands it over).

    ``delivery_attempt`` is the push request's own ``deliveryAttempt`` when the body
    handed over no longer carries it (see ``push_delivery_attempt``); ``topic`` is the
    topic the CloudEvent names as its source (see ``topic_of``).
    """
    message = (data or {}).get("message") or {}
    try:
        payload = base64.b64decode(message.get("data", ""), validate=True)
    except (binascii.Error, TypeError, ValueError):
        payload = b""  # undecodable: decode() reports it as an invalid event
    return Message(
        data=payload,
        attributes=dict(message.get("attributes") or {}),
        message_id=str(message.get("messageId") or message.get("message_id") or ""),
        delivery_attempt=int((data or {}).get("deliveryAttempt") or delivery_attempt or 1),
        published_at=message.get("publishTime") or message.get("publish_time"),
        topic=topic,
    )


def topic_of(source: str | None) -> str | None:
    """The topic name in a Pub/Sub CloudEvent's source
    (``//pubsub.googleapis.com/projects/<project>/topics/<topic>``): functions-framework
    reads it from the push endpoint's path, which names the subscription's topic."""
    _, found, topic = (source or "").rpartition("/topics/")
    return (topic or None) if found else None


def push_delivery_attempt() -> int | None:
    """``deliveryAttempt`` of the raw Pub/Sub push request being served, if any.

    Pub/Sub puts it at the top of the push body when the subscription has a dead-letter
    policy. functions-framework turns a raw push body into a CloudEvent whose data keeps
    only the message (``event_conversion.marshal_background_event_data`` copies data,
    attributes, messageId and publishTime), so the count is read from the request itself,
    which Flask still holds while the function runs.
    """
    import flask

    if not flask.has_request_context():
        return None
    body = flask.request.get_json(force=True, silent=True)
    if not isinstance(body, dict):
        return None
    try:
        attempt = int(body.get("deliveryAttempt") or 0)
    except (TypeError, ValueError):
        return None
    return attempt if attempt > 0 else None


def cloud_function(stage: str) -> Callable[[CloudEvent], None]:
    """The functions-framework entry point (named ``handle``) for ``stage`` (or the
    notifier, ``notify``: ``service.consumers`` says which call a consumer is).

    Raising makes Pub/Sub redeliver; permanent failures are recorded and acknowledged
    inside ``pipeline.consume``. Every model's definition is read from the artifact
    bucket as its events come (``domain.models``; ``modelrail add`` checked it before
    storing it), so one function serves every model. No client is created here;
    adapters stay lazy. Logging is set up here, once per instance, not on every event.
    """
    import functions_framework

    logs.configure()

    @functions_framework.cloud_event
    def handle(cloud_event: CloudEvent) -> None:
        message = message_from_push(
            cloud_event.data, push_delivery_attempt(), topic_of(cloud_event["source"])
        )
        consumers.consume(container(), stage, message)

    return handle


def run_job(stage: str, event_json: str | None) -> int:
    """A job's body (training, validation at size): run ``stage`` for the event passed
    in the environment, here (``in_job``: it never hands the stage off again)."""
    if not event_json:
        log.error("MODELRAIL_EVENT is empty: the job was started without an event")
        return 2
    pipeline.consume(container(), stage, Message(event_json.encode(), {}), in_job=True)
    return 0
