variable "project_id" {
  description = "The project the builds run in."
  type        = string
}

variable "location" {
  description = "The trigger location (global for repositories connected through the Cloud Build GitHub app)."
  type        = string
  default     = "global"
}

variable "name_prefix" {
  description = "Prefix of the trigger names."
  type        = string
}

variable "github_owner" {
  description = "The GitHub user or organisation that owns the repository."
  type        = string
}

variable "github_repository" {
  description = "The GitHub repository name."
  type        = string
}

variable "branch" {
  description = "The branch that deploys (pull requests into it run the checks)."
  type        = string
  default     = "main"
}

variable "service_account_id" {
  description = "The service account builds run as, as projects/P/serviceAccounts/EMAIL (builds then log to Cloud Logging only)."
  type        = string
}

variable "substitutions" {
  description = "The _UPPER substitutions both pipelines read (region, repository, state bucket, ...)."
  type        = map(string)
}
