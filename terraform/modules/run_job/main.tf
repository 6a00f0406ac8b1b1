# A Cloud Run job. The training job: a job, not a function, because training can
# outlast the 9-minute limit of event-driven functions; `launch_training` starts one
# execution per event, passing the event in the MODELRAIL_EVENT environment override,
# and the job publishes model-trained itself when done. The sweep: the training image
# with another command, run on a schedule (envs/dev/sweep.tf). The validate job: the
# training image running the validate stage for uploads too large for the function
# (envs/dev/validate_job.tf).
resource "google_cloud_run_v2_job" "this" {
  project             = var.project_id
  location            = var.region
  name                = var.name
  labels              = var.labels
  deletion_protection = false

  template {
    task_count  = var.task_count
    parallelism = var.task_count

    template {
      service_account = var.service_account_email
      timeout         = "${var.timeout_seconds}s"
      max_retries     = var.max_retries

      # Direct VPC egress: the job's private traffic leaves through a subnetwork (the
      # training job reaches its Dask cluster's VMs this way, envs/dev/dask.tf).
      dynamic "vpc_access" {
        for_each = var.vpc_access == null ? [] : [var.vpc_access]
        content {
          egress = vpc_access.value.egress

          network_interfaces {
            network    = vpc_access.value.network
            subnetwork = vpc_access.value.subnetwork
            tags       = vpc_access.value.tags
          }
        }
      }

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
