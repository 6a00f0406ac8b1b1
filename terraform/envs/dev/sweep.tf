# The sweep on a schedule: `modelrail sweep` ends the runs that cannot end by
# themselves (a training execution that died, a lost message; src/modelrail/service/sweep.py).
# It is a Cloud Run job running the training image with another command, started by
# Cloud Scheduler through the Cloud Run Admin API. Its account reads the run history,
# records a failed stage (create-only, the stage records after validate only),
# publishes pipeline-failed and reads the training job's executions (iam.tf); the
# scheduler's account may only run this job.

locals {
  sweep_job_name = "${var.name_prefix}-sweep"
}

# The sweep is told its own deadline (--timeout-seconds): a production canary it could
# not finish in time is not started (src/modelrail/service/promotion.py,
# carry_out_approved).
module "sweep_job" {
  source                = "../../modules/run_job"
  project_id            = var.project_id
  region                = var.region
  name                  = local.sweep_job_name
  image                 = local.train_image
  command               = ["python", "-m", "modelrail"]
  args                  = ["sweep", "--timeout-seconds", tostring(var.sweep.timeout_seconds)]
  service_account_email = data.google_service_account.stage["sweep"].email
  cpu                   = var.sweep.cpu
  memory                = var.sweep.memory
  timeout_seconds       = var.sweep.timeout_seconds
  # A failed sweep is retried by the next scheduled one.
  max_retries           = 0
  labels                = local.labels
  environment_variables = local.train_image_env
  depends_on            = [module.apis, time_sleep.iam_propagation]
}

resource "google_cloud_run_v2_job_iam_member" "scheduler_runs_sweep" {
  project  = var.project_id
  location = var.region
  name     = module.sweep_job.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${data.google_service_account.stage["scheduler"].email}"
}

resource "google_cloud_scheduler_job" "sweep" {
  project     = var.project_id
  region      = var.region
  name        = local.sweep_job_name
  description = "Runs the Cloud Run job ${local.sweep_job_name} (modelrail sweep)."
  schedule    = var.sweep.schedule
  time_zone   = "Etc/UTC"
  # The call only starts an execution: it answers at once.
  attempt_deadline = "60s"

  retry_config {
    # A missed start is made up by the next scheduled one.
    retry_count = 0
  }

  http_target {
    http_method = "POST"
    uri         = "https://run.googleapis.com/v2/projects/${var.project_id}/locations/${var.region}/jobs/${module.sweep_job.name}:run"

    # An OAuth access token (a Google API is called, not a Cloud Run URL).
    oauth_token {
      service_account_email = data.google_service_account.stage["scheduler"].email
      scope                 = "https://www.googleapis.com/auth/cloud-platform"
    }
  }

  depends_on = [
    module.apis,
    google_cloud_run_v2_job_iam_member.scheduler_runs_sweep,
    time_sleep.iam_propagation,
  ]
}
