# Production (docs/deploy.md, "Production"): one production service per model beside
# its staging one, <name_prefix>-production-<model>, serving what the registry's
# production alias names. A person proposes a version (an object under
# models/<model>/proposals/), another approves it (an object under
# models/<model>/approvals/, which only the approver role may create), and the sweep,
# every 10 minutes, carries out the approved proposals: it alone may update the
# production services and move the production alias (iam.tf, local.model_writes).
#
# The production services run as an account of their own, `production` (created with the
# other stage accounts in terraform/envs/bootstrap): it holds what the staging account
# serves with (iam.tf: the artifact bucket read, the prediction log under predictions/;
# artifact_registry.tf: the model repository read; bootstrap's kms.tf: the signing key's
# public key) and the shadow grants below, which the staging account does not hold. The
# sweep acts as it (bootstrap's main.tf) to roll out a new revision; the deploy stage
# does not.
locals {
  production_service_name = "${var.name_prefix}-production"
  # Grants on every model's production service (each row once per model): the sweep
  # rolls an approved version out (a new revision pinned to it) and smoke-tests it.
  production_service_grants = [
    { sa = "sweep", role = "roles/run.developer" },
    { sa = "sweep", role = "roles/run.invoker" },
  ]
  # The approver role (terraform/envs/bootstrap/production.tf, the owner's): create
  # objects, under the condition below only models/<model>/approvals/.
  promotion_approver_role = "projects/${var.project_id}/roles/${replace(var.name_prefix, "-", "_")}_promotion_approver"
}

module "production_service" {
  source                = "../../modules/run_service"
  for_each              = toset(var.models)
  project_id            = var.project_id
  region                = var.region
  name                  = "${local.production_service_name}-${each.key}"
  image                 = "${module.docker_repository.url}/staging:${var.code_version}"
  service_account_email = data.google_service_account.stage["production"].email
  ingress               = var.production_service.ingress
  invoker_members       = var.production_service.invoker_members
  cpu                   = var.production_service.cpu
  memory                = var.production_service.memory
  concurrency           = var.production_service.concurrency
  min_instance_count    = var.production_service.min_instances
  max_instance_count    = var.production_service.max_instances
  labels                = local.labels
  # The first revision follows the registry's production alias (not ready until a
  # promotion); the sweep then pins MODELRAIL_MODEL_VERSION with a new revision.
  environment_variables = {
    MODELRAIL_MODE            = "cloud"
    GOOGLE_CLOUD_PROJECT      = var.project_id
    MODELRAIL_ARTIFACT_BUCKET = local.buckets.artifacts
    MODELRAIL_MODEL_NAME      = each.key
    MODELRAIL_MODEL_ALIAS     = "production"
    MODELRAIL_SIGNING_KEY     = local.manifest_signing_key
    # Shadow comparison (docs/architecture.md, "Shadow"): the candidate production
    # mirrors a share of its requests to when the model's [production] shadow is on.
    MODELRAIL_SHADOW_URL = module.staging_service[each.key].uri
  }
  depends_on = [module.apis, time_sleep.iam_propagation]
}

resource "google_cloud_run_v2_service_iam_member" "production" {
  for_each = {
    for pair in setproduct(var.models, local.production_service_grants) :
    "${pair[0]}/${pair[1].sa}/${pair[1].role}" => merge(pair[1], { model = pair[0] })
  }

  project  = var.project_id
  location = var.region
  name     = module.production_service[each.value.model].name
  role     = each.value.role
  member   = "serviceAccount:${data.google_service_account.stage[each.value.sa].email}"
}

# Proposers and approvers read the registry (the versions, the aliases, the proposals)
# to propose and approve from the command line.
resource "google_storage_bucket_iam_member" "promotion_proposers_read" {
  for_each = toset(var.promotion_proposers)

  bucket = local.buckets.artifacts
  role   = "roles/storage.objectViewer"
  member = each.value

  depends_on = [module.buckets]
}

resource "google_storage_bucket_iam_member" "promotion_approvers_read" {
  for_each = toset(var.promotion_approvers)

  bucket = local.buckets.artifacts
  role   = "roles/storage.objectViewer"
  member = each.value

  depends_on = [module.buckets]
}

# A proposal is a new object under models/<model>/proposals/: objectCreator creates,
# and can neither overwrite nor delete one.
resource "google_storage_bucket_iam_member" "promotion_proposers" {
  for_each = toset(var.promotion_proposers)

  bucket = local.buckets.artifacts
  role   = "roles/storage.objectCreator"
  member = each.value

  condition {
    title       = "proposes-promotions"
    description = "New objects under models/<model>/proposals/: promotion proposals."
    expression = join(" || ", [
      for model in var.models :
      "resource.name.startsWith(\"${local.artifact_objects}models/${model}/proposals/\")"
    ])
  }

  depends_on = [module.buckets]
}

# An approval is a new object under models/<model>/approvals/, which only the approver
# role creates; the sweep carries out a proposal only once its approval exists. No stage
# account holds the role (tests/infra).
resource "google_storage_bucket_iam_member" "promotion_approvers" {
  for_each = toset(var.promotion_approvers)

  bucket = local.buckets.artifacts
  role   = local.promotion_approver_role
  member = each.value

  condition {
    title       = "approves-promotions"
    description = "New objects under models/<model>/approvals/: promotion approvals."
    expression = join(" || ", [
      for model in var.models :
      "resource.name.startsWith(\"${local.artifact_objects}models/${model}/approvals/\")"
    ])
  }

  depends_on = [module.buckets]
}

# Shadow comparison (src/modelrail/serving/shadow.py): the production service, as the
# production account, calls its model's staging service with an ID token, and writes
# each batch of comparisons as a new object under shadow/. objectCreator creates
# objects, and cannot read, overwrite or delete one. Production's grants alone: the
# staging account can neither call a staging service nor write a comparison
# (tests/infra).
resource "google_cloud_run_v2_service_iam_member" "production_shadows_staging" {
  for_each = toset(var.models)

  project  = var.project_id
  location = var.region
  name     = module.staging_service[each.key].name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${data.google_service_account.stage["production"].email}"
}

resource "google_storage_bucket_iam_member" "shadow_log" {
  bucket = local.buckets.artifacts
  role   = "roles/storage.objectCreator"
  member = "serviceAccount:${data.google_service_account.stage["production"].email}"

  condition {
    title       = "production-writes-its-shadow-comparisons"
    description = "New objects under shadow/: the production services' shadow comparisons."
    expression  = "resource.name.startsWith(\"${local.artifact_objects}shadow/\")"
  }

  depends_on = [module.buckets]
}

# The production canary (docs/deploy.md, "Production"): the sweep moves each step's
# traffic by revision percentages (roles/run.developer on the production services,
# above) and judges the step on each revision's request_count and request_latencies in
# Cloud Monitoring, which has no resource narrower than the project: read-only there.
module "monitoring_api" {
  source     = "../../modules/apis"
  project_id = var.project_id
  services   = ["monitoring.googleapis.com"]
}

resource "google_project_iam_member" "sweep_reads_run_metrics" {
  project = var.project_id
  role    = "roles/monitoring.viewer"
  member  = "serviceAccount:${data.google_service_account.stage["sweep"].email}"

  depends_on = [module.monitoring_api]
}
