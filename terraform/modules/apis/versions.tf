terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = "6.50.0" # the schema the offline checks were run against: docs/deploy.md
    }
  }
}
