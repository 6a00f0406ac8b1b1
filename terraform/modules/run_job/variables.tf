variable "project_id" {
  description = "The project to create the job in."
  type        = string
}

variable "region" {
  description = "The job's region."
  type        = string
}

variable "name" {
  description = "The job name (the training job's is MODELRAIL_TRAINING_JOB for the launcher)."
  type        = string
}

variable "image" {
  description = "The image, tagged with the commit SHA."
  type        = string
}

variable "command" {
  description = "The program to run instead of the image's ENTRYPOINT; null keeps the ENTRYPOINT."
  type        = list(string)
  default     = null
}

variable "args" {
  description = "The arguments of the program; null keeps the image's CMD."
  type        = list(string)
  default     = null
}

variable "service_account_email" {
  description = "The job's runtime service account."
  type        = string
}

variable "environment_variables" {
  description = "Environment variables of every execution (the launcher adds MODELRAIL_EVENT to each training execution)."
  type        = map(string)
  default     = {}
}

variable "cpu" {
  description = "vCPUs per task. LightGBM trains on all of them (num_threads permitting)."
  type        = string
  default     = "2"
}

variable "memory" {
  description = "Memory per task, e.g. 4Gi: the data set, its frame and the booster must fit."
  type        = string
  default     = "4Gi"
}

variable "timeout_seconds" {
  description = "The longest one training run may take."
  type        = number
  default     = 3600
}

variable "max_retries" {
  description = "Task retries on failure. Training (by run id) and the sweep (create-only records) are idempotent, so a retry is safe."
  type        = number
  default     = 1
}

variable "labels" {
  description = "Labels applied to the job."
  type        = map(string)
  default     = {}
}

variable "vpc_access" {
  description = "Direct VPC egress: the network and subnetwork the job's traffic leaves through, network tags of that traffic, and which traffic (PRIVATE_RANGES_ONLY: only private addresses; Google APIs stay on the default path). null: no VPC access."
  type = object({
    network    = string
    subnetwork = string
    tags       = optional(list(string), [])
    egress     = optional(string, "PRIVATE_RANGES_ONLY")
  })
  default = null

  validation {
    condition     = var.vpc_access == null || contains(["ALL_TRAFFIC", "PRIVATE_RANGES_ONLY"], try(var.vpc_access.egress, ""))
    error_message = "vpc_access.egress must be ALL_TRAFFIC or PRIVATE_RANGES_ONLY."
  }
}

variable "task_count" {
  description = "Tasks of each execution, all run at once (the batch job's parallel tasks; every other job runs one)."
  type        = number
  default     = 1
}
