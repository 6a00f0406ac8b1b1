variable "project_id" {
  description = "The project to create the service in."
  type        = string
}

variable "region" {
  description = "The service's region."
  type        = string
}

variable "name" {
  description = "The service name: <MODELRAIL_STAGING_SERVICE>-<model>, the name the deploy stage derives for the model."
  type        = string

  # Cloud Run's rule for a service id (fewer than 50 characters): a long name_prefix with
  # a long model name is refused here, at plan time, not by the API halfway through an
  # apply.
  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,47}[a-z0-9])?$", var.name))
    error_message = "A Cloud Run service name is at most 49 lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen: shorten name_prefix or the model's name."
  }
}

variable "image" {
  description = "The staging service image, tagged with the commit SHA."
  type        = string
}

variable "service_account_email" {
  description = "The service's runtime service account."
  type        = string
}

variable "environment_variables" {
  description = "Environment of the first revision; afterwards the deploy stage owns it (see lifecycle)."
  type        = map(string)
  default     = {}
}

variable "ingress" {
  description = "Who may reach the URL at the network level. Authentication is always required: no public invoker is ever granted."
  type        = string
  default     = "INGRESS_TRAFFIC_ALL"

  validation {
    condition     = contains(["INGRESS_TRAFFIC_ALL", "INGRESS_TRAFFIC_INTERNAL_ONLY", "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER"], var.ingress)
    error_message = "ingress must be INGRESS_TRAFFIC_ALL, INGRESS_TRAFFIC_INTERNAL_ONLY or INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER."
  }
}

variable "invoker_members" {
  description = "IAM members allowed to call the service (user:, group:, serviceAccount:). Never allUsers or allAuthenticatedUsers."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for member in var.invoker_members : !contains(["allUsers", "allAuthenticatedUsers"], member)])
    error_message = "The staging service is never public: allUsers and allAuthenticatedUsers are refused."
  }
}

variable "port" {
  description = "The container port; Cloud Run passes it as $PORT (and the image maps AIP_HTTP_PORT to it)."
  type        = number
  default     = 8080
}

variable "health_path" {
  description = "The liveness route the probes call."
  type        = string
  default     = "/healthz"
}

variable "cpu" {
  description = "vCPUs per instance."
  type        = string
  default     = "1"
}

variable "memory" {
  description = "Memory per instance, e.g. 1Gi."
  type        = string
  default     = "1Gi"
}

variable "concurrency" {
  description = "Requests one instance serves at once (gunicorn workers x threads should match)."
  type        = number
  default     = 16
}

variable "request_timeout_seconds" {
  description = "The longest one request may take."
  type        = number
  default     = 30
}

variable "min_instance_count" {
  description = "Instances kept warm (billed while idle); 0 scales to zero and pays a cold start."
  type        = number
  default     = 0
}

variable "max_instance_count" {
  description = "The most instances at once: the cost ceiling."
  type        = number
  default     = 3
}

variable "labels" {
  description = "Labels applied to the service."
  type        = map(string)
  default     = {}
}
