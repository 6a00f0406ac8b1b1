"""checkov with modelrail's custom policies (terraform/policies): zero unexplained
failures on the real configuration, and each deliberate breakage caught."""

from __future__ import annotations

from typing import Any

import pytest

from tests.infra.conftest import MUTATED_RESOURCES

pytestmark = [pytest.mark.infra, pytest.mark.xdist_group("checkov")]

CUSTOM_CHECKS = {"CKV_MR_1", "CKV_MR_2", "CKV_MR_3", "CKV_MR_4", "CKV_MR_5"}


def _describe(checks: list[dict[str, Any]]) -> str:
    return "\n".join(f"{c['check_id']} {c['resource']} ({c['file_path']})" for c in checks)


def test_no_failed_checks(checkov_results: dict[str, dict[str, Any]]) -> None:
    failed = checkov_results["real"]["failed_checks"]
    assert failed == [], f"fix these or skip inline with a reason:\n{_describe(failed)}"


def test_every_skip_is_justified(checkov_results: dict[str, dict[str, Any]]) -> None:
    skipped = checkov_results["real"]["skipped_checks"]
    unjustified = [
        c for c in skipped if len((c["check_result"].get("suppress_comment") or "").strip()) < 30
    ]
    assert unjustified == [], (
        f"#checkov:skip=ID:<why> needs a real reason:\n{_describe(unjustified)}"
    )


def test_custom_policies_ran(checkov_results: dict[str, dict[str, Any]]) -> None:
    real = checkov_results["real"]
    seen = {c["check_id"] for kind in real.values() for c in kind}
    assert seen >= CUSTOM_CHECKS, f"custom policies not loaded: {sorted(CUSTOM_CHECKS - seen)}"


@pytest.mark.parametrize(
    ("mutation", "check_id"),
    [
        ("public_invoker", "CKV_MR_1"),
        ("no_dead_letter", "CKV_MR_3"),
        ("unconditional_write", "CKV_MR_4"),
        ("pull_requests_as_deployer", "CKV_MR_5"),
    ],
)
def test_a_broken_copy_fails(
    checkov_results: dict[str, dict[str, Any]], mutation: str, check_id: str
) -> None:
    failed = {(c["check_id"], c["resource"]) for c in checkov_results["broken"]["failed_checks"]}
    assert (check_id, MUTATED_RESOURCES[mutation]) in failed, f"{mutation}: {check_id} passed"


@pytest.mark.parametrize(
    ("check_id", "resource"),
    [
        ("CKV_MR_4", 'google_storage_bucket_iam_member.artifact_writes["validate"]'),
        ("CKV_MR_4", 'google_storage_bucket_iam_member.artifact_writes["register"]'),
        ("CKV_MR_5", "module.cloudbuild_triggers.google_cloudbuild_trigger.pr_checks"),
    ],
)
def test_the_real_grants_pass(
    checkov_results: dict[str, dict[str, Any]], check_id: str, resource: str
) -> None:
    passed = {(c["check_id"], c["resource"]) for c in checkov_results["real"]["passed_checks"]}
    assert (check_id, resource) in passed, f"{check_id} did not pass on {resource}"
