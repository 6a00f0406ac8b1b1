# One private bucket: uniform bucket-level access (IAM only, no ACLs), public access
# prevention enforced, object versioning so an overwritten or deleted object can be
# restored, and a lifecycle rule that bounds what old versions cost.
resource "google_storage_bucket" "this" {
  #checkov:skip=CKV_GCP_62:Access is audited by Cloud Audit Logs (data access logs); usage-log buckets would double the buckets for no extra signal.
  project  = var.project_id
  name     = var.name
  location = var.location
  labels   = var.labels

  storage_class               = "STANDARD"
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  force_destroy               = var.force_destroy

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      num_newer_versions = var.noncurrent_versions_kept
      with_state         = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = var.noncurrent_days_kept
    }
    action {
      type = "Delete"
    }
  }

  # Objects kept for a while only (the prediction logs): deleted this many days after
  # they were written; their noncurrent copy then goes by the rule above.
  dynamic "lifecycle_rule" {
    for_each = var.expiring_prefixes
    content {
      condition {
        age            = lifecycle_rule.value
        matches_prefix = [lifecycle_rule.key]
      }
      action {
        type = "Delete"
      }
    }
  }
}
