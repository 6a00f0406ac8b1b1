"""The event graph read from ``topology.yaml`` (the file Terraform also reads)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import yaml

from modelrail.errors import ConfigError


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
