# Batch prediction in the cloud: a Cloud Run job running the training image's modelrail
# (python -m modelrail.entry.batch_job), whose parallel tasks each score their share of
# the input's parts (CLOUD_RUN_TASK_INDEX of CLOUD_RUN_TASK_COUNT) with a registered
# version, verified as the staging service verifies it, and write their output parts;
# the last task writes the drift report and the manifest (src/modelrail/service/batch.py).
# `modelrail predict --cloud` (or anyone) publishes a batch-requested event; the
# launch_batch function (a listener of topology.yaml) starts one execution with it in an
# environment override, and may run this job and no other. Its account reads the artifact bucket (iam.tf, bucket_grants:
# the registry, the models' definitions, the inputs) and writes under batch/ only (the
# grant below: inputs and outputs live in gs://<artifact bucket>/batch/); it publishes nothing
# and reads nothing of the data bucket (uploads/ is the pipeline's).

locals {
  batch_job_name = "${var.name_prefix}-batch"

  # Only the launch_batch function reads it (Settings.from_env): which job to start.
  batch_function_env = {
    MODELRAIL_BATCH_JOB = local.batch_job_name
  }
}

module "batch_job" {
  source                = "../../modules/run_job"
  project_id            = var.project_id
  region                = var.region
  name                  = local.batch_job_name
  image                 = local.train_image
  command               = ["python", "-m", "modelrail.entry.batch_job"]
  service_account_email = data.google_service_account.stage["batch"].email
  cpu                   = var.batch_job.cpu
  memory                = var.batch_job.memory
  timeout_seconds       = var.batch_job.timeout_seconds
  max_retries           = var.batch_job.max_retries
  task_count            = var.batch_job.tasks
  labels                = local.labels
  environment_variables = local.train_image_env
  depends_on            = [module.apis, time_sleep.iam_propagation]
}

# Write the outputs: parts, refused rows, task records, the drift report and the
# manifest (create-only), all under batch/.
resource "google_storage_bucket_iam_member" "batch_writes" {
  bucket = local.buckets.artifacts
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${data.google_service_account.stage["batch"].email}"

  condition {
    title       = "batch-writes-its-outputs"
    description = "Objects under batch/: batch predictions' inputs and outputs."
    expression  = "resource.name.startsWith(\"${local.artifact_objects}batch/\")"
  }

  depends_on = [module.buckets]
}

# run_job with the request as an environment override (run.jobs.runWithOverrides), on
# this job only.
resource "google_cloud_run_v2_job_iam_member" "launch_batch" {
  project  = var.project_id
  location = var.region
  name     = module.batch_job.name
  role     = "roles/run.jobsExecutorWithOverrides"
  member   = "serviceAccount:${data.google_service_account.stage["launch_batch"].email}"
}
