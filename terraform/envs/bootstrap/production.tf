# The promotion approver role (docs/deploy.md, "Production"): creating objects, nothing
# else. terraform/envs/dev grants it on the artifact bucket, under a condition, to
# var.promotion_approvers only: a new object under models/<model>/approvals/ is an
# approval, and the sweep carries out a proposal only once one exists. A custom role is
# the owner's to define (the deployer holds no iam.roles.create).
resource "google_project_iam_custom_role" "promotion_approver" {
  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_promotion_approver"
  title       = "modelrail promotion approver"
  description = "Create a promotion approval (models/<model>/approvals/<proposal>.json); granted on the artifact bucket under a condition on that prefix (terraform/envs/dev/production.tf)."
  permissions = ["storage.objects.create"]
}
