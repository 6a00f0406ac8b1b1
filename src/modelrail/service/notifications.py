"""The notifier: tells each model's webhooks (``[[notify.webhooks]]``) of failed runs,
rejected candidates, deployed versions and drift.

A consumer of the bus like a stage, but no stage of a run: it reads the event, never a
run's records, and writes only its own delivery records (``notifications/<model>/``),
so nothing it does, or fails to do, changes a run. Per webhook: 2xx is delivered; a
timeout, a connection error, 408, 429 or 5xx is retried by the bus with its
subscription's backoff (the webhooks already delivered are not posted again); any other
answer, or a URL that cannot be found, fails at once. On the subscription's last
attempt what is still failing is recorded failed and the message acknowledged, so a
broken webhook never loops nor reaches the dead-letter topic. Only a delivery that
cannot write its records (its bucket unwritable) is dead-lettered, like a stage's.
"""

from __future__ import annotations

import logging

from modelrail.domain.config import Webhook
from modelrail.domain.notifications import (
    Deliveries,
    Notice,
    Verdict,
    body_for,
    judge,
    notice_of,
)
from modelrail.kernel import logs
from modelrail.kernel.errors import (
    ConfigError,
    InvalidEvent,
    PermanentError,
    TransientError,
    UnknownModel,
)
from modelrail.kernel.events import decode_json, validate_body
from modelrail.kernel.ports import Message
from modelrail.service.container import Container

log = logging.getLogger(__name__)

# The consumer topology.yaml names for the notifier's subscriptions.
CONSUMER = "notify"


def consume(container: Container, message: Message) -> None:
    """Notify the webhooks of the event's model that asked for its kind; raise
    ``TransientError`` while one may still answer later and attempts remain."""
    with logs.pipeline_context(stage=CONSUMER):
        notice = _notice(message)
        if notice is None:
            return
        logs.bind(model=notice.model, **({"run_id": notice.run_id} if notice.run_id else {}))
        try:
            webhooks = container.models.config(notice.model).webhooks
        except (UnknownModel, ConfigError) as exc:
            log.warning("no notification for %s: %s", notice.model, exc)
            return
        wanted = [webhook for webhook in webhooks if notice.kind in webhook.events]
        deliveries = Deliveries(container.artifacts)
        allowed = _allowed(container, notice)
        pending = [
            webhook.name
            for webhook in wanted
            if not _notify(
                container, deliveries, webhook, notice, message.delivery_attempt, allowed
            )
        ]
        if pending:
            raise TransientError(
                f"{notice.kind} {notice.event_id}: webhooks {', '.join(pending)} may answer "
                f"later (attempt {message.delivery_attempt} of {allowed})"
            )


def _notice(message: Message) -> Notice | None:
    """The notice the message gives; None (logged, acknowledged) for a body that is not
    a valid event of a topic notified: retrying it cannot help, and it is no run's."""
    try:
        body = decode_json(message.data)
        topic = message.topic or str(body.get("event_type", ""))
        validate_body(topic, body)
        return notice_of(topic, body)
    except (InvalidEvent, KeyError) as exc:
        log.warning("not notifying message %s: %s", message.message_id, exc)
        return None


def _notify(
    container: Container,
    deliveries: Deliveries,
    webhook: Webhook,
    notice: Notice,
    delivery_attempt: int,
    allowed: int,
) -> bool:
    """Post ``notice`` to ``webhook`` unless an earlier delivery settled it; record what
    became of it. False when it failed and may pass on a later attempt."""
    earlier = deliveries.get(notice.model, notice.event_id, webhook.name)
    if earlier is not None and earlier.final:
        return True
    # The Pub/Sub emulator does not count attempts: the record does.
    attempts = max(delivery_attempt, (earlier.attempts + 1) if earlier else 1)
    last = attempts >= allowed
    try:
        url = container.secrets.reveal(webhook.url_secret, webhook.url_env)
        answer = container.webhooks.post(url, body_for(webhook, notice))
    except PermanentError as exc:
        return _failed(deliveries, notice, webhook, attempts, exc.message)
    except (OSError, TransientError) as exc:
        verdict: Verdict = "retry"
        error, status = f"{type(exc).__name__}: {exc}", None
    else:
        verdict, error, status = judge(answer), f"HTTP {answer}", answer
    if verdict == "delivered":
        deliveries.record(notice, webhook.name, "delivered", attempts, http_status=status)
        log.info("notified %s of %s %s", webhook.name, notice.kind, notice.event_id)
        return True
    if verdict == "refused" or last:
        return _failed(deliveries, notice, webhook, attempts, error, status)
    deliveries.record(notice, webhook.name, "pending", attempts, error, status)
    log.warning("webhook %s: %s (attempt %d, retried)", webhook.name, error, attempts)
    return False


def _allowed(container: Container, notice: Notice) -> int:
    """The attempts the notifier's subscription to the notice's topic makes."""
    topic = "pipeline-failed" if notice.kind == "gate-rejected" else notice.kind
    return min(
        (
            s.max_delivery_attempts
            for s in container.topology.subscriptions
            if s.consumer == CONSUMER and s.topic == topic
        ),
        default=1,
    )


def _failed(
    deliveries: Deliveries,
    notice: Notice,
    webhook: Webhook,
    attempts: int,
    error: str,
    status: int | None = None,
) -> bool:
    deliveries.record(notice, webhook.name, "failed", attempts, error, status)
    log.error(
        "webhook %s was not told of %s %s: %s (attempt %d); recorded at %s",
        webhook.name, notice.kind, notice.event_id, error, attempts,
        Deliveries.key(notice.model, notice.event_id, webhook.name),
    )  # fmt: skip
    return True
