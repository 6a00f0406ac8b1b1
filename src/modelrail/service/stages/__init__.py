"""One pure handler per stage: an event and named ports in, an outcome out.

A handler declares what it touches as keyword-only parameters: the ports and settings
``Container.provide`` names, and the delivery's ``run_id``, ``causation_id``,
``message_id``, ``delivery_attempt`` and ``lineage`` (the run's so far); the service
layer passes exactly those
(``pipeline.inject``).

Handlers never import a cloud library, never read the environment and never publish:
the pipeline service layer (``modelrail.service.pipeline``) records their outcome and
publishes the event they return. A handler raises ``PermanentError`` when retrying
cannot help and lets anything else propagate so the bus redelivers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from modelrail.kernel.events import PipelineEvent

# The outcome of a delivery that handed its stage to a job (``service.handoff``): the
# job records the stage, so the pipeline records and publishes nothing for it.
HANDED_OFF = "handed_off"


@dataclasses.dataclass(frozen=True)
class Outcome:
    """A handler's result: the event to publish (if any) and what to record."""

    event: PipelineEvent | None
    output: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    # or "skipped": nothing to do (e.g. a superseded deploy); or HANDED_OFF: not recorded
    status: str = "succeeded"
    # What ran elsewhere reports its resources here (a Dask cluster's ``workers``);
    # the pipeline adds this process's peak memory.
    resources: Mapping[str, Any] | None = None
