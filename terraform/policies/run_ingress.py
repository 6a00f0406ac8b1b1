"""CKV_MR_2: Cloud Run v2 services and 2nd-gen functions accept only internal traffic,
and a Cloud Run service never disables its IAM invoker check.

The stage functions are called only by Pub/Sub push (internal traffic). A service
that must stay reachable over HTTPS says why with an inline skip.
"""

from __future__ import annotations

from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck

try:
    from terraform.policies._common import first
except ImportError:  # loaded as a plain module from --external-checks-dir
    from _common import first  # type: ignore[no-redef]

INTERNAL_RUN_INGRESS = ("INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER")
INTERNAL_FUNCTION_INGRESS = ("ALLOW_INTERNAL_ONLY", "ALLOW_INTERNAL_AND_GCLB")


class InternalIngress(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Cloud Run v2 services and 2nd-gen functions: internal ingress, invoker IAM on",
            id="CKV_MR_2",
            categories=[CheckCategories.NETWORKING],
            supported_resources=["google_cloud_run_v2_service", "google_cloudfunctions2_function"],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        if self.entity_type == "google_cloudfunctions2_function":
            service_config = first(conf, "service_config") or {}
            ingress = first(service_config, "ingress_settings")
            # The API's default is ALLOW_ALL: an unset ingress is public ingress.
            return (
                CheckResult.PASSED if ingress in INTERNAL_FUNCTION_INGRESS else CheckResult.FAILED
            )
        if first(conf, "invoker_iam_disabled") is True:
            return CheckResult.FAILED
        ingress = first(conf, "ingress")
        return CheckResult.PASSED if ingress in INTERNAL_RUN_INGRESS else CheckResult.FAILED


check = InternalIngress()
