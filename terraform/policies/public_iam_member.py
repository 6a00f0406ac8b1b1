"""CKV_MR_1: no IAM grant to allUsers or allAuthenticatedUsers on what the pipeline runs.

checkov's built-in checks cover buckets and v1 Cloud Run services, not Cloud Run v2
services and jobs, 2nd-gen functions or Pub/Sub: a public invoker there lets anyone on
the internet call the staging model or trigger a stage.
"""

from __future__ import annotations

from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck

try:
    from terraform.policies._common import PUBLIC_MEMBERS, flatten
except ImportError:  # loaded as a plain module from --external-checks-dir
    from _common import PUBLIC_MEMBERS, flatten  # type: ignore[no-redef]

IAM_RESOURCES = [
    f"google_{kind}_iam_{variant}"
    for kind in (
        "cloud_run_v2_service",
        "cloud_run_v2_job",
        "cloud_run_service",
        "cloudfunctions2_function",
        "cloudfunctions_function",
        "pubsub_topic",
        "pubsub_subscription",
        "storage_bucket",
        "artifact_registry_repository",
        "service_account",
        "project",
    )
    for variant in ("member", "binding")
]


class NoPublicIamMember(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="No IAM grant to allUsers or allAuthenticatedUsers",
            id="CKV_MR_1",
            categories=[CheckCategories.IAM],
            supported_resources=IAM_RESOURCES,
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        members = flatten(conf.get("member", [])) + flatten(conf.get("members", []))
        for member in members:
            if isinstance(member, str) and any(public in member for public in PUBLIC_MEMBERS):
                return CheckResult.FAILED
        return CheckResult.PASSED


check = NoPublicIamMember()
