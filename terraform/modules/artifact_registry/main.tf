# A Docker repository in Artifact Registry, with cleanup policies so images of old
# commits do not pile up (storage is billed per GB).
resource "google_artifact_registry_repository" "this" {
  #checkov:skip=CKV_GCP_84:Images hold public code and dependencies; Google-managed encryption is enough and CMEK would add a KMS key ring and per-request KMS cost.
  project       = var.project_id
  location      = var.region
  repository_id = var.repository_id
  description   = var.description
  format        = "DOCKER"
  labels        = var.labels

  docker_config {
    immutable_tags = var.immutable_tags
  }

  cleanup_policy_dry_run = false

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = var.keep_recent
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      tag_state  = "ANY"
      older_than = "${var.delete_after_days * 86400}s"
    }
  }
}
