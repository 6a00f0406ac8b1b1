output "enabled_services" {
  description = "The enabled API service names (depend on this output to wait for enablement)."
  value       = [for service in google_project_service.this : service.service]
}
