"""CKV_MR_4: a grant that lets a principal write objects in a bucket names the objects.

An object-write role on a bucket without an IAM condition lets the holder overwrite
anything in it: the validate stage, which parses untrusted CSVs, could replace a
registered model. Every such grant carries a condition on the object's name
(``resource.name.startsWith("projects/_/buckets/<bucket>/objects/<prefix>")``).
A role checkov cannot resolve (taken from a grant table) is checked by tests/infra,
which reads the tables.
"""

from __future__ import annotations

from typing import Any

from checkov.common.models.enums import CheckCategories, CheckResult
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck

try:
    from terraform.policies._common import OBJECT_NAME_CONDITION, OBJECT_WRITE_ROLES, first
except ImportError:  # loaded as a plain module from --external-checks-dir
    from _common import (  # type: ignore[no-redef]
        OBJECT_NAME_CONDITION,
        OBJECT_WRITE_ROLES,
        first,
    )


class BucketWriteCondition(BaseResourceCheck):
    def __init__(self) -> None:
        super().__init__(
            name="Object-write grants on buckets are limited to object names by an IAM condition",
            id="CKV_MR_4",
            categories=[CheckCategories.IAM],
            supported_resources=[
                "google_storage_bucket_iam_member",
                "google_storage_bucket_iam_binding",
            ],
        )

    def scan_resource_conf(self, conf: dict[str, Any]) -> CheckResult:
        if first(conf, "role") not in OBJECT_WRITE_ROLES:
            return CheckResult.PASSED
        condition = first(conf, "condition")
        expression = first(condition, "expression") if isinstance(condition, dict) else None
        if isinstance(expression, str) and OBJECT_NAME_CONDITION in expression:
            return CheckResult.PASSED
        return CheckResult.FAILED


check = BucketWriteCondition()
