# The Google APIs the pipeline uses. Never disabled on destroy: other workloads in the
# project may depend on them, and disabling an API deletes its resources.
resource "google_project_service" "this" {
  for_each = toset(var.services)

  project                    = var.project_id
  service                    = each.value
  disable_on_destroy         = false
  disable_dependent_services = false
}
