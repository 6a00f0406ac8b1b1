# Cloud Build on GitHub: checks on every pull request to main, and on every push to main
# the deploy pipeline (tests, images, terraform apply, retrain event). The repository
# must be connected to Cloud Build once, in the console (docs/deploy.md, step 4).
#
# A pull request's build runs the pull request's own code (its Makefile, its tests), so
# it runs as its own account, which can write build logs and nothing else: never as the
# deployer, whose roles administer the whole pipeline (checkov policy CKV_MR_4).
resource "google_cloudbuild_trigger" "pr_checks" {
  project         = var.project_id
  location        = var.location
  name            = "${var.name_prefix}-pr-checks"
  description     = "Lint, type-check, tests and infrastructure checks on pull requests to main."
  filename        = "cloudbuild/pr-checks.yaml"
  service_account = var.pr_checks_service_account_id

  github {
    owner = var.github_owner
    name  = var.github_repository

    pull_request {
      branch          = "^${var.branch}$"
      comment_control = "COMMENTS_ENABLED_FOR_EXTERNAL_CONTRIBUTORS_ONLY"
    }
  }
}

resource "google_cloudbuild_trigger" "deploy" {
  project         = var.project_id
  location        = var.location
  name            = "${var.name_prefix}-deploy"
  description     = "Tests, images tagged with the commit SHA, terraform apply and a retrain event on every push to main."
  filename        = "cloudbuild/deploy.yaml"
  service_account = var.deploy_service_account_id
  substitutions   = var.deploy_substitutions

  github {
    owner = var.github_owner
    name  = var.github_repository

    push {
      branch = "^${var.branch}$"
    }
  }
}
