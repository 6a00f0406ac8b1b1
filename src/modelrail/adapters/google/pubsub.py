"""EventBus on Google Cloud Pub/Sub (``google-cloud-pubsub``).

Publishing only: consumption is push, into each stage's functions-framework entry
point, configured by the topology (Terraform in the cloud, ``modelrail up
--emulators`` locally). The client library reads ``PUBSUB_EMULATOR_HOST`` itself, so
the same code publishes to Pub/Sub and to Google's emulator.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from modelrail.kernel.errors import TransientError

if TYPE_CHECKING:
    from google.cloud.pubsub_v1 import PublisherClient

# How long a publish may take before the stage fails (and its own delivery is retried).
_PUBLISH_TIMEOUT_S = 60.0


class PubSubBus:
    """Publishes to topics of one project; the publisher is created on first use."""

    def __init__(self, project: str) -> None:
        self.project = project
        self._publisher: Any = None
        self._lock = threading.Lock()

    @property
    def publisher(self) -> PublisherClient:
        with self._lock:
            if self._publisher is None:
                from google.cloud.pubsub_v1 import PublisherClient

                self._publisher = PublisherClient()
            publisher: PublisherClient = self._publisher
            return publisher

    def topic_path(self, topic: str) -> str:
        """``projects/<project>/topics/<topic>``; a full path is returned as given."""
        if topic.startswith("projects/"):
            return topic
        return f"projects/{self.project}/topics/{topic}"

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        from google.api_core import exceptions

        future = self.publisher.publish(self.topic_path(topic), data, **dict(attributes))
        try:
            message_id: str = future.result(timeout=_PUBLISH_TIMEOUT_S)
        except exceptions.NotFound as exc:
            raise TransientError(f"topic {self.topic_path(topic)} does not exist: {exc}") from exc
        except (exceptions.GoogleAPICallError, TimeoutError) as exc:
            raise TransientError(f"publish to {self.topic_path(topic)} failed: {exc}") from exc
        return message_id

    def drain(self) -> None:
        """Nothing is outstanding: ``publish`` returns only once Pub/Sub has the message."""
