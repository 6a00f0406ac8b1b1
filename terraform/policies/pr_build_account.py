"""CKV_MR_5: a pull-request build trigger runs as an account this configuration creates
for it, never as the deployer and never as Cloud Build's default account.

A pull request's build runs the pull request's code. As the deployer (storage, Pub/Sub,
IAM and Cloud Run admin) that code could deploy or take over the pipeline; Cloud Build's
legacy default account holds broad project roles too. The pull-request account is a
``google_service_account`` of terraform/ whose only role is writing build logs; the
deployer is created by hand and reaches Terraform as a variable, so a trigger whose
account is not such a reference fails.
"""

from __future__ import annotations

from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck

try:
    from terraform.policies._common import first
except ImportError:  # loaded as a plain module from --external-checks-dir
    from _common import first  # type: ignore[no-redef]

# Created in terraform/envs/bootstrap and looked up in the environment root.
MANAGED_ACCOUNTS = ("google_service_account.", "data.google_service_account.")


def runs_on_pull_requests(conf: dict[str, Any]) -> bool:
    for source in ("github", "repository_event_config"):
        block = first(conf, source)
        if isinstance(block, dict) and first(block, "pull_request") is not None:
            return True
    return False


class PullRequestBuildAccount(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Pull-request builds run as their own account, not the deployer",
            id="CKV_MR_5",
            categories=[CheckCategories.IAM],
            supported_resources=["google_cloudbuild_trigger"],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        if not runs_on_pull_requests(conf):
            return CheckResult.PASSED
        account = first(conf, "service_account")
        if isinstance(account, str) and account.startswith(MANAGED_ACCOUNTS):
            return CheckResult.PASSED
        return CheckResult.FAILED


check = PullRequestBuildAccount()
