# A model's staging prediction service (envs/dev makes one per model). Terraform creates
# it and rolls out new images; the deploy stage owns which model version it serves: it
# updates MODELRAIL_MODEL_VERSION with a new revision (run_v2.ServicesClient.update_service),
# so Terraform ignores the container environment after creation instead of reverting a
# deploy.
resource "google_cloud_run_v2_service" "this" {
  #checkov:skip=CKV_MR_2:Ingress stays open to HTTPS so the deploy stage can smoke-test a new revision and developers can call /predict; every request still needs an IAM identity holding run.invoker (no allUsers/allAuthenticatedUsers, enforced by CKV_MR_1). Set var.ingress to INGRESS_TRAFFIC_INTERNAL_ONLY once callers reach it through a VPC.
  project              = var.project_id
  location             = var.region
  name                 = var.name
  labels               = var.labels
  ingress              = var.ingress
  invoker_iam_disabled = false
  deletion_protection  = false

  template {
    service_account                  = var.service_account_email
    max_instance_request_concurrency = var.concurrency
    timeout                          = "${var.request_timeout_seconds}s"

    scaling {
      min_instance_count = var.min_instance_count
      max_instance_count = var.max_instance_count
    }

    containers {
      image = var.image

      ports {
        container_port = var.port
      }

      resources {
        limits = {
          cpu    = var.cpu
          memory = var.memory
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = var.environment_variables
        content {
          name  = env.key
          value = env.value
        }
      }

      startup_probe {
        http_get {
          path = var.health_path
        }
        period_seconds    = 2
        failure_threshold = 30
      }

      liveness_probe {
        http_get {
          path = var.health_path
        }
      }
    }
  }

  lifecycle {
    ignore_changes = [
      template[0].containers[0].env, # the deploy stage pins the model version here
      client,
      client_version,
    ]
  }
}

resource "google_cloud_run_v2_service_iam_member" "invokers" {
  for_each = toset(var.invoker_members)

  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.this.name
  role     = "roles/run.invoker"
  member   = each.value
}
