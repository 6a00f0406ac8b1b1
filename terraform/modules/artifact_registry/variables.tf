variable "project_id" {
  description = "The project that owns the repository."
  type        = string
}

variable "region" {
  description = "The repository location (a region, next to Cloud Run)."
  type        = string
}

variable "repository_id" {
  description = "The repository name."
  type        = string
}

variable "description" {
  description = "What the repository holds."
  type        = string
  default     = ""
}

variable "immutable_tags" {
  description = "Refuse to move a tag once pushed (images are tagged with the commit SHA, so a tag always means one build)."
  type        = bool
  default     = true
}

variable "keep_recent" {
  description = "Always keep this many most recent versions of each image, whatever their age (rollback targets)."
  type        = number
  default     = 10
}

variable "delete_after_days" {
  description = "Delete versions older than this many days (unless kept by keep_recent)."
  type        = number
  default     = 30
}

variable "labels" {
  description = "Labels applied to the repository."
  type        = map(string)
  default     = {}
}
