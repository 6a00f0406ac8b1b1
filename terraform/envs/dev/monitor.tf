# The monitor on a schedule: `modelrail monitor --every-model` judges a window of each
# installed model's prediction log against its staging version's training data
# (src/modelrail/service/monitoring.py), keeps the reports under monitoring/, publishes
# drift-detected and, with a model's [retrain] on_drift, retrain-requested. A Cloud Run
# job running the training image with another command, started by Cloud Scheduler
# through the Cloud Run Admin API, like the sweep (sweep.tf). Its account reads the
# artifact bucket (the log, the registry, the run history) and the uploads, writes only
# monitoring/ and each model's retrain-on-drift policy (iam.tf); the monitor's own
# scheduler account may only run this job.

locals {
  monitor_job_name = "${var.name_prefix}-monitor"
}

module "monitor_job" {
  source                = "../../modules/run_job"
  project_id            = var.project_id
  region                = var.region
  name                  = local.monitor_job_name
  image                 = local.train_image
  command               = ["python", "-m", "modelrail"]
  args                  = ["monitor", "--every-model", "--hours", tostring(var.monitor.window_hours)]
  service_account_email = data.google_service_account.stage["monitor"].email
  cpu                   = var.monitor.cpu
  memory                = var.monitor.memory
  timeout_seconds       = var.monitor.timeout_seconds
  # A window is judged again only by hand (docs/deploy.md): a retried execution would
  # judge a later window, overlapping this one.
  max_retries           = 0
  labels                = local.labels
  environment_variables = local.train_image_env
  depends_on            = [module.apis, time_sleep.iam_propagation]
}

resource "google_cloud_run_v2_job_iam_member" "monitor_cron_runs_monitor" {
  project  = var.project_id
  location = var.region
  name     = module.monitor_job.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${data.google_service_account.stage["monitor_cron"].email}"
}

resource "google_cloud_scheduler_job" "monitor" {
  project     = var.project_id
  region      = var.region
  name        = local.monitor_job_name
  description = "Runs the Cloud Run job ${local.monitor_job_name} (modelrail monitor --every-model)."
  schedule    = var.monitor.schedule
  time_zone   = "Etc/UTC"
  # The call only starts an execution: it answers at once.
  attempt_deadline = "60s"

  retry_config {
    # A missed window is judged by hand (docs/deploy.md), not by a late start whose
    # window would be another.
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}/jobs/${module.monitor_job.name}:run"

    # An OAuth access token (a Google API is called, not a Cloud Run URL).
    oauth_token {
      service_account_email = data.google_service_account.stage["monitor_cron"].email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [
    module.apis,
    google_cloud_run_v2_job_iam_member.monitor_cron_runs_monitor,
    time_sleep.iam_propagation,
  ]
}

# The monitoring reports (src/modelrail/service/monitoring.py): one object per model,
# version and window under monitoring/, rewritten when a window is judged again. Nothing
# of a run; of the registry only each model's retrain-on-drift policy (local.model_writes).
resource "google_storage_bucket_iam_member" "monitoring_reports" {
  bucket = local.buckets.artifacts
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${data.google_service_account.stage["monitor"].email}"

  condition {
    title       = "monitor-writes-its-reports"
    description = "Objects under monitoring/: the monitor's reports."
    expression  = "resource.name.startsWith(\"${local.artifact_objects}monitoring/\")"
  }

  depends_on = [module.buckets]
}
