"""The event graph read from ``topology.yaml`` (the file Terraform also reads)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from modelrail.kernel.errors import ConfigError


def _seconds(value: str | int) -> int:
    return int(str(value).removesuffix("s"))


@dataclasses.dataclass(frozen=True)
class Subscription:
    name: str
    topic: str
    consumer: str | None  # None: a pull subscription that holds messages for people
    ack_deadline_seconds: int
    max_delivery_attempts: int
    minimum_backoff_s: int
    maximum_backoff_s: int

    def backoff_s(self, failed_attempt: int) -> float:
        """How long Pub/Sub waits before redelivering after delivery ``failed_attempt``
        (1-based) failed: the minimum backoff, doubled for each earlier failure, capped
        at the maximum."""
        exponent = min(max(failed_attempt - 1, 0), 32)
        return float(min(self.maximum_backoff_s, self.minimum_backoff_s * 2**exponent))

    def longest_backoff_s(self) -> float:
        """The longest wait between two of its deliveries (before the last one)."""
        return self.backoff_s(self.max_delivery_attempts - 1)

    def redeliveries_come_within_s(self, start_s: float) -> float:
        """The longest the deliveries can take to come when none holds on to its work:
        the backoffs between them, each attempt allowed ``start_s`` before it shows
        itself (a cold start, reading the event; a delivery failing that early)."""
        attempts = self.max_delivery_attempts
        backoffs = sum(self.backoff_s(n) for n in range(1, attempts))
        return float(attempts * start_s + backoffs)

    def deliveries_take_s(self) -> float:
        """The longest all its deliveries can take: each may run to the ack deadline,
        with the backoffs between them."""
        attempts = self.max_delivery_attempts
        backoffs = sum(self.backoff_s(n) for n in range(1, attempts))
        return float(attempts * self.ack_deadline_seconds + backoffs)


@dataclasses.dataclass(frozen=True)
class Topology:
    topics: tuple[str, ...]
    subscriptions: tuple[Subscription, ...]
    dead_letter_topic: str

    def consumers_of(self, topic: str) -> list[Subscription]:
        return [s for s in self.subscriptions if s.topic == topic]

    @classmethod
    def load(cls, path: Path) -> Topology:
        try:
            spec: dict[str, Any] = yaml.safe_load(path.read_text())
            defaults = spec["defaults"]
            topics = tuple(t["name"] for t in spec["topics"])
            subscriptions = tuple(
                Subscription(
                    name=s["name"],
                    topic=s["topic"],
                    consumer=s.get("consumer"),
                    ack_deadline_seconds=int(
                        s.get("ack_deadline_seconds", defaults["ack_deadline_seconds"])
                    ),
                    max_delivery_attempts=int(
                        s.get("max_delivery_attempts", defaults["max_delivery_attempts"])
                    ),
                    minimum_backoff_s=_seconds(defaults["retry"]["minimum_backoff"]),
                    maximum_backoff_s=_seconds(defaults["retry"]["maximum_backoff"]),
                )
                for s in spec["subscriptions"]
            )
            topology = cls(topics, subscriptions, spec["dead_letter_topic"])
        except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid topology file {path}: {exc!r}") from exc
        unknown = {s.topic for s in subscriptions} - set(topics)
        if unknown or topology.dead_letter_topic not in topics:
            raise ConfigError(f"topology {path} names unknown topics: {sorted(unknown)}")
        return topology
