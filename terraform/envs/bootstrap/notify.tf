# The webhook URLs the notifier posts to (each model's [[notify.webhooks]] url_secret):
# Secret Manager secrets the owner creates and fills (docs/deploy.md, "Notifications"),
# never Terraform, whose state would hold the URL. The notifier's account may read the
# secrets named here, and no other. Here, not in terraform/envs/dev: whoever may set IAM
# on a secret may read it, and the deployer holds no Secret Manager role.
variable "notification_secrets" {
  description = "The Secret Manager secrets holding webhook URLs, by id (S) or name (projects/P/secrets/S): the notifier's account may access these, and no other secret."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for secret in var.notification_secrets : can(regex("^(projects/[^/]+/secrets/)?[A-Za-z0-9_-]{1,255}$", secret))])
    error_message = "Each of notification_secrets is a secret id (S) or name (projects/P/secrets/S), not a version."
  }
}

resource "google_secret_manager_secret_iam_member" "notify_reads_webhook_urls" {
  for_each = toset(var.notification_secrets)

  project   = var.project_id
  secret_id = each.value
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.stage["notify"].email}"
}
