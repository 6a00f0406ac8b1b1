# Data of any size: an upload too large for the validate function is validated by a
# Cloud Run job running the same code (python -m modelrail.entry.validate_job) on the
# training image, which holds modelrail and all its dependencies. The function decides
# by the object's size (MODELRAIL_VALIDATE_IN_JOB_ABOVE_MB) and starts one execution
# with the event in an environment override, as launch_training starts the training job.
# The job runs as the validate account: it reads and writes exactly what the function
# does (iam.tf: bucket_grants, artifact_writes, topic_grants), so it is granted nothing
# more; the function's account may run this job and no other.

locals {
  validate_job_name = "${var.name_prefix}-validate"

  # Only the validate function reads these (Settings.from_env): which job to start, and
  # above which object size.
  validate_function_env = {
    MODELRAIL_VALIDATE_JOB             = local.validate_job_name
    MODELRAIL_VALIDATE_IN_JOB_ABOVE_MB = tostring(var.validate_in_job_above_mb)
  }

  validate_job_grants = [
    # run_job with the event as an environment override (run.jobs.runWithOverrides) and
    # read the execution it started (run.executions.get), on this job only.
    { sa = "validate", role = "roles/run.jobsExecutorWithOverrides" },
    # read an execution's state, to find a validate job that died (run.executions.get).
    { sa = "sweep", role = "roles/run.viewer" },
  ]
}

module "validate_job" {
  source                = "../../modules/run_job"
  project_id            = var.project_id
  region                = var.region
  name                  = local.validate_job_name
  image                 = local.train_image
  command               = ["python", "-m", "modelrail.entry.validate_job"]
  service_account_email = data.google_service_account.stage["validate"].email
  cpu                   = var.validate_job.cpu
  memory                = var.validate_job.memory
  timeout_seconds       = var.validate_job.timeout_seconds
  max_retries           = var.validate_job.max_retries
  labels                = local.labels
  environment_variables = local.train_image_env
  depends_on            = [module.apis, time_sleep.iam_propagation]
}

resource "google_cloud_run_v2_job_iam_member" "validate_job" {
  for_each = { for grant in local.validate_job_grants : "${grant.sa}/${grant.role}" => grant }

  project  = var.project_id
  location = var.region
  name     = module.validate_job.name
  role     = each.value.role
  member   = "serviceAccount:${data.google_service_account.stage[each.value.sa].email}"
}
