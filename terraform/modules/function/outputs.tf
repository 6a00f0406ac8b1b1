output "name" {
  description = "The function name."
  value       = google_cloudfunctions2_function.this.name
}

output "uri" {
  description = "The function's HTTPS URL (reachable only from inside Google Cloud: internal ingress)."
  value       = google_cloudfunctions2_function.this.service_config[0].uri
}

output "service" {
  description = "The Cloud Run service that runs the function."
  value       = google_cloudfunctions2_function.this.service_config[0].service
}

output "source_object" {
  description = "The content-addressed source archive object."
  value       = google_storage_bucket_object.source.name
}
