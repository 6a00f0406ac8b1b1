# Model versions in Artifact Registry. The register stage publishes every version it
# registers here as a generic package (package = model name, version = v<N>, files:
# the model, manifest, card and every other file of the version). The artifact bucket
# stays the source of truth; this is where Google's tooling and people find versions.
resource "google_artifact_registry_repository" "models" {
  #checkov:skip=CKV_GCP_84:Model files are also kept in the artifact bucket under Google-managed encryption; CMEK would add a KMS key ring and per-request KMS cost.
  project       = var.project_id
  location      = var.region
  repository_id = "${var.name_prefix}-models"
  description   = "modelrail model versions (generic packages), published by the register stage."
  format        = "GENERIC"
  labels        = local.labels
  # No cleanup policy: every version stays, as in the bucket (lineage, rollback).
  depends_on = [module.apis]
}

locals {
  # Grants on the model repository only, never project-wide.
  model_repository_grants = [
    # Upload a version's files and list what a version holds (resume, refuse a conflict).
    { sa = "register", role = "roles/artifactregistry.writer" },
    # Read the versions it deploys and serves.
    { sa = "deploy", role = "roles/artifactregistry.reader" },
    { sa = "staging", role = "roles/artifactregistry.reader" },
    { sa = "production", role = "roles/artifactregistry.reader" },
  ]
}

resource "google_artifact_registry_repository_iam_member" "models" {
  for_each = { for grant in local.model_repository_grants : "${grant.sa}/${grant.role}" => grant }

  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.models.repository_id
  role       = each.value.role
  member     = "serviceAccount:${data.google_service_account.stage[each.value.sa].email}"
}
