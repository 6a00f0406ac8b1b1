output "name" {
  description = "The job name."
  value       = google_cloud_run_v2_job.this.name
}

output "id" {
  description = "The job id (projects/P/locations/L/jobs/J)."
  value       = google_cloud_run_v2_job.this.id
}
