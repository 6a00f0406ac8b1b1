output "name" {
  description = "The bucket name."
  value       = google_storage_bucket.this.name
}

output "url" {
  description = "The bucket as a gs:// URL."
  value       = google_storage_bucket.this.url
}
