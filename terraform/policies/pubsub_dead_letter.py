"""CKV_MR_3: every Pub/Sub subscription has a dead-letter topic and a retry policy.

Without them Pub/Sub retries a poison message immediately and forever (or, with a
consumer that acks on failure, the message is lost silently). A subscription at the
end of the line (the dead-letter hold) says why with an inline skip.
"""

from __future__ import annotations

from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck

try:
    from terraform.policies._common import first
except ImportError:  # loaded as a plain module from --external-checks-dir
    from _common import first  # type: ignore[no-redef]


class SubscriptionDeadLetter(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Pub/Sub subscriptions have a dead-letter policy and a retry policy",
            id="CKV_MR_3",
            categories=[CheckCategories.GENERAL_SECURITY],
            supported_resources=["google_pubsub_subscription"],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        dead_letter = first(conf, "dead_letter_policy")
        retry = first(conf, "retry_policy")
        if not isinstance(dead_letter, dict) or not first(dead_letter, "dead_letter_topic"):
            return CheckResult.FAILED
        if not isinstance(retry, dict):
            return CheckResult.FAILED
        return CheckResult.PASSED


check = SubscriptionDeadLetter()
