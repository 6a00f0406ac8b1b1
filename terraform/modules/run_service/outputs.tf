output "name" {
  description = "The service name."
  value       = google_cloud_run_v2_service.this.name
}

output "uri" {
  description = "The service's HTTPS URL (IAM-authenticated)."
  value       = google_cloud_run_v2_service.this.uri
}

output "id" {
  description = "The service id (projects/P/locations/L/services/S)."
  value       = google_cloud_run_v2_service.this.id
}
