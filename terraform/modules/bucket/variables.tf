variable "project_id" {
  description = "The project that owns the bucket."
  type        = string
}

variable "name" {
  description = "The globally unique bucket name."
  type        = string
}

variable "location" {
  description = "The bucket location: the pipeline's region keeps data next to the functions and the training job."
  type        = string
}

variable "labels" {
  description = "Labels applied to the bucket."
  type        = map(string)
  default     = {}
}

variable "force_destroy" {
  description = "Allow `terraform destroy` to delete a non-empty bucket. Keep false for anything holding models."
  type        = bool
  default     = false
}

variable "noncurrent_versions_kept" {
  description = "How many noncurrent versions of an object to keep before deleting the oldest."
  type        = number
  default     = 5
}

variable "noncurrent_days_kept" {
  description = "Delete a noncurrent object version this many days after it was replaced."
  type        = number
  default     = 30
}

variable "expiring_prefixes" {
  description = "Object name prefix -> days: objects whose names start so are deleted that many days after they were written."
  type        = map(number)
  default     = {}
  validation {
    condition     = alltrue([for days in values(var.expiring_prefixes) : days >= 1])
    error_message = "Each expiring prefix keeps its objects at least one day."
  }
}
