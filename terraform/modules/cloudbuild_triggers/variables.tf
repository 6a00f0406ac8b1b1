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

variable "deploy_service_account_id" {
  description = "The service account deploy builds run as (the deployer), as projects/P/serviceAccounts/EMAIL (builds then log to Cloud Logging only)."
  type        = string
}

variable "pr_checks_service_account_id" {
  description = "The service account pull-request builds run as, as projects/P/serviceAccounts/EMAIL: one that can write build logs and nothing else, never the deployer."
  type        = string
}

variable "deploy_substitutions" {
  description = "The _UPPER substitutions the deploy pipeline reads (region, repository, state bucket, ...)."
  type        = map(string)
}
