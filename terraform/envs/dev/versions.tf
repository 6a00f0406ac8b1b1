terraform {
  required_version = ">= 1.7" # removed blocks (kms.tf)

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "6.50.0" # the schema the offline checks were run against: docs/deploy.md
    }
    google-beta = {
      source  = "hashicorp/google-beta"
      version = "6.50.0" # google_project_service_identity: the same release as google
    }
    time = {
      source  = "hashicorp/time"
      version = "0.13.1" # time_sleep: the wait for IAM propagation (iam.tf)
    }
    archive = {
      source  = "hashicorp/archive"
      version = ">= 2.4, < 3.0"
    }
  }
}
