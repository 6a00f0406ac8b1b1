variable "project_id" {
  description = "The project to enable the APIs in."
  type        = string
}

variable "services" {
  description = "The API service names to enable, for example run.googleapis.com."
  type        = list(string)
}
