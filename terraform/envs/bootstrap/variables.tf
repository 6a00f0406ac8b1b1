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

variable "dask_training" {
  description = "The owner's half of training on a Dask cluster of Compute Engine VMs (dask.tf): the VMs' account, the training account's custom role and actAs on it, the network, its two subnetworks (the VMs; the training job's Direct VPC egress) and firewall. Turn on here before dask_training.enabled in terraform/envs/dev."
  type = object({
    enabled      = optional(bool, false)
    vm_cidr      = optional(string, "10.64.0.0/24")
    job_cidr     = optional(string, "10.64.1.0/26")
    worker_ports = optional(string, "32768-60999")
  })
  default = {}

  validation {
    condition     = can(cidrnetmask(var.dask_training.vm_cidr)) && can(cidrnetmask(var.dask_training.job_cidr))
    error_message = "dask_training.vm_cidr and .job_cidr must be IPv4 CIDR ranges."
  }

  # Cloud Run's Direct VPC egress takes addresses from a subnetwork of at least /26.
  validation {
    condition     = tonumber(split("/", var.dask_training.job_cidr)[1]) <= 26
    error_message = "dask_training.job_cidr must be a /26 or larger (Direct VPC egress)."
  }

  validation {
    condition     = can(regex("^[0-9]{4,5}-[0-9]{4,5}$", var.dask_training.worker_ports))
    error_message = "dask_training.worker_ports must be a port range such as 32768-60999."
  }
}
