output "id" {
  description = "The repository id (projects/P/locations/L/repositories/R)."
  value       = google_artifact_registry_repository.this.id
}

output "name" {
  description = "The repository name."
  value       = google_artifact_registry_repository.this.repository_id
}

output "url" {
  description = "The Docker registry prefix for images: REGION-docker.pkg.dev/PROJECT/REPOSITORY."
  value       = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.this.repository_id}"
}
