variable "project_id" {
  description = "The project to deploy the function in."
  type        = string
}

variable "region" {
  description = "The function's region."
  type        = string
}

variable "name" {
  description = "The function name (lowercase letters, digits and hyphens)."
  type        = string
}

variable "description" {
  description = "What the function does."
  type        = string
  default     = ""
}

variable "source_dir" {
  description = "The folder built by `make stage` (build/functions/<stage>): main.py, requirements.txt, the modelrail package and its data files."
  type        = string
}

variable "archive_dir" {
  description = "Where the zipped source is written locally before upload."
  type        = string
}

variable "source_bucket" {
  description = "The bucket that holds function source archives."
  type        = string
}

variable "runtime" {
  description = "The Cloud Functions runtime."
  type        = string
  default     = "python311"
}

variable "entry_point" {
  description = "The functions-framework target in main.py."
  type        = string
  default     = "handle"
}

variable "build_service_account_id" {
  description = "The service account Cloud Build uses to build the function, as projects/P/serviceAccounts/EMAIL."
  type        = string
}

variable "docker_repository_id" {
  description = "The Artifact Registry repository (projects/P/locations/L/repositories/R) that receives the built function images."
  type        = string
}

variable "service_account_email" {
  description = "The runtime service account: the only identity the function's code acts as."
  type        = string
}

variable "invoker_service_account_email" {
  description = "The trigger service account: Pub/Sub presents its OIDC token when pushing to the function."
  type        = string
}

variable "environment_variables" {
  description = "Runtime environment variables (Settings.from_env reads them)."
  type        = map(string)
  default     = {}
}

variable "available_memory" {
  description = "Memory per instance, e.g. 512Mi. Drives cost and the CPU share."
  type        = string
  default     = "512Mi"
}

variable "available_cpu" {
  description = "vCPUs per instance, e.g. \"1\"."
  type        = string
  default     = "1"
}

variable "timeout_seconds" {
  description = "The longest one invocation may run; set to the subscription's ack deadline."
  type        = number
  default     = 60
}

variable "min_instance_count" {
  description = "Instances kept warm (billed while idle). 0 scales to zero."
  type        = number
  default     = 0
}

variable "max_instance_count" {
  description = "The most instances at once: bounds cost and the load on downstream services."
  type        = number
  default     = 5
}

variable "concurrency" {
  description = "Requests one instance takes at once (more than 1 needs at least one vCPU)."
  type        = number
  default     = 1
}

variable "labels" {
  description = "Labels applied to the function."
  type        = map(string)
  default     = {}
}
