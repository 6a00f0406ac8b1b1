# One Cloud Function (2nd gen) built from a `make stage` folder. The archive object is
# named by the content hash of the folder, so a function is rebuilt and redeployed only
# when its own code, requirements or bundled files change.
#
# The function is fed by a push subscription of topology.yaml (see modules/pubsub), not
# by an `event_trigger`: an event trigger makes Eventarc create and own a second
# subscription whose dead-letter policy Terraform cannot set, while topology.yaml gives
# every subscription a retry policy and a dead-letter topic. The push subscription's
# OIDC identity is the trigger service account; `var.service_account_email` is the
# runtime one.
data "archive_file" "source" {
  type             = "zip"
  source_dir       = var.source_dir
  output_path      = "${var.archive_dir}/${var.name}.zip"
  output_file_mode = "0644"
}

resource "google_storage_bucket_object" "source" {
  bucket = var.source_bucket
  name   = "functions/${var.name}/${data.archive_file.source.output_sha256}.zip"
  source = data.archive_file.source.output_path
}

resource "google_cloudfunctions2_function" "this" {
  project     = var.project_id
  location    = var.region
  name        = var.name
  description = var.description
  labels      = var.labels

  build_config {
    runtime           = var.runtime
    entry_point       = var.entry_point
    service_account   = var.build_service_account_id
    docker_repository = var.docker_repository_id

    source {
      storage_source {
        bucket = var.source_bucket
        object = google_storage_bucket_object.source.name
      }
    }
  }

  service_config {
    available_memory                 = var.available_memory
    available_cpu                    = var.available_cpu
    timeout_seconds                  = var.timeout_seconds
    min_instance_count               = var.min_instance_count
    max_instance_count               = var.max_instance_count
    max_instance_request_concurrency = var.concurrency
    ingress_settings                 = "ALLOW_INTERNAL_ONLY"
    all_traffic_on_latest_revision   = true
    service_account_email            = var.service_account_email
    # functions-framework serves with gunicorn threads, 4 per vCPU unless THREADS says
    # otherwise: as many as the requests an instance takes at once.
    environment_variables = merge(var.environment_variables, var.concurrency > 1 ? { THREADS = tostring(var.concurrency) } : {})
  }
}

# Only the push identity may invoke the function (2nd-gen functions are Cloud Run
# services underneath: the grant goes on that service).
resource "google_cloud_run_v2_service_iam_member" "invoker" {
  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.this.service_config[0].service
  role     = "roles/run.invoker"
  member   = "serviceAccount:${var.invoker_service_account_email}"
}
