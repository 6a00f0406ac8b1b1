output "trigger_ids" {
  description = "Trigger name => trigger id."
  value = {
    (google_cloudbuild_trigger.pr_checks.name) = google_cloudbuild_trigger.pr_checks.trigger_id
    (google_cloudbuild_trigger.deploy.name)    = google_cloudbuild_trigger.deploy.trigger_id
  }
}
