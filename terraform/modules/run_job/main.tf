# A Cloud Run job. The training job: a job, not a function, because training can
# outlast the 9-minute limit of event-driven functions; `launch_training` starts one
# execution per event, passing the event in the MODELRAIL_EVENT environment override,
# and the job publishes model-trained itself when done. The sweep: the training image
# with another command, run on a schedule (envs/dev/sweep.tf).
resource "google_cloud_run_v2_job" "this" {
  project             = var.project_id
  location            = var.region
  name                = var.name
  labels              = var.labels
  deletion_protection = false

  template {
    task_count  = 1
    parallelism = 1

    template {
      service_account = var.service_account_email
      timeout         = "${var.timeout_seconds}s"
      max_retries     = var.max_retries

      containers {
        image   = var.image
        command = var.command
        args    = var.args

        resources {
          limits = {
            cpu    = var.cpu
            memory = var.memory
          }
        }

        dynamic "env" {
          for_each = var.environment_variables
          content {
            name  = env.key
            value = env.value
          }
        }
      }
    }
  }

  lifecycle {
    # Set by gcloud or the console when someone runs the job by hand.
    ignore_changes = [client, client_version]
  }
}
