variable "project_id" {
  description = "The Google Cloud project the pipeline runs in."
  type        = string
}

variable "region" {
  description = "The region of the signing key (the environment's region: the stages sign and verify there)."
  type        = string
  default     = "europe-west1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as europe-west1."
  }
}

variable "name_prefix" {
  description = "Prefix of the service accounts and the key ring: the environment's name_prefix."
  type        = string
  default     = "modelrail"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,13}$", var.name_prefix))
    error_message = "name_prefix: 3-14 lowercase letters, digits or hyphens, starting with a letter (service account ids are at most 30 characters)."
  }
}

variable "deployer_service_account_email" {
  description = "The account Cloud Build applies terraform/envs/dev as (docs/deploy.md, step 3): it gets actAs on each pipeline account, and nothing here lets it grant itself more."
  type        = string
}

variable "manifest_signing" {
  description = "The manifest signing key's protection level: SOFTWARE, or HSM to keep it in Cloud HSM (dearer per signature; one signature per version)."
  type = object({
    protection_level = optional(string, "SOFTWARE")
  })
  default = {}

  validation {
    condition     = contains(["SOFTWARE", "HSM"], var.manifest_signing.protection_level)
    error_message = "manifest_signing.protection_level must be SOFTWARE or HSM."
  }
}
