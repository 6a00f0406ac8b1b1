# What only the project's owner applies, once and again when an account or the signing
# key's grants change (docs/deploy.md, step 3): the pipeline's service accounts, every
# grant on them, and the manifest signing key with its grants. Setting IAM on service
# accounts and on the key is what made the deployer an owner in all but name (actAs on
# any account, the signer role on the key); the deployer applies terraform/envs/dev,
# which only looks these up, so it holds neither iam.serviceAccountAdmin nor
# cloudkms.admin.
provider "google" {
  project = var.project_id
  region  = var.region
}

provider "google-beta" {
  project = var.project_id
  region  = var.region
}

locals {
  # One service account per stage. terraform/envs/dev looks them up by the same keys
  # (local.stage_accounts there; tests/infra keeps the two lists equal).
  service_accounts = {
    validate        = "validate stage: checks an uploaded or requested dataset against its contract"
    launch_training = "launch_training stage: starts one training job execution per validated dataset"
    train           = "training job: trains the LightGBM candidate and publishes model-trained"
    evaluate        = "evaluate stage: scores the candidate and the champion on the hold-out"
    register        = "register stage: claims a version in the registry"
    deploy          = "deploy stage: pins the staging service to a version, smoke-tests, rolls back"
    staging         = "staging service: serves predictions of the pinned version"
    production      = "production service: serves predictions of the version the production alias names, mirrors a share to staging"
    push            = "Pub/Sub push identity: the only caller allowed to invoke the stage functions"
    function_build  = "builds the stage functions' containers (Cloud Functions build service account)"
    pr_build        = "pull-request checks in Cloud Build: runs the pull request's tests, writes build logs, deploys nothing"
    sweep           = "sweep job: records as failed the runs whose training job died or whose message was lost"
    scheduler       = "Cloud Scheduler identity: the only caller allowed to run the sweep job"
    batch           = "batch job: scores files under batch/ with a registered version (modelrail predict --cloud)"
    launch_batch    = "launch_batch listener: starts one batch job execution per batch-requested event"
    notify          = "notifier: posts failed runs, rejections, deploys and drift to the models' webhooks"
    # The scheduled monitor (terraform/envs/dev/monitor.tf).
    monitor      = "monitor job: judges each model's prediction log for drift, publishes drift-detected and retrains on drift"
    monitor_cron = "Cloud Scheduler identity of the monitor: the only caller allowed to run the monitor job"
  }

  service_account_grants = [
    # A new staging revision runs as the staging account: updating it needs actAs on it.
    { sa = "deploy", target = "staging", role = "roles/iam.serviceAccountUser" },
    # The sweep's reconciliation pass rolls staging back to its alias the same way.
    { sa = "sweep", target = "staging", role = "roles/iam.serviceAccountUser" },
    # The sweep alone rolls production out (approved promotions, canary steps, its
    # reconciliation): each new production revision runs as the production account.
    # The deploy stage touches staging only, so it does not act as production.
    { sa = "sweep", target = "production", role = "roles/iam.serviceAccountUser" },
  ]
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_service_account" "stage" {
  for_each = local.service_accounts

  project      = var.project_id
  account_id   = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  display_name = "modelrail ${each.key}"
  description  = each.value
}

resource "google_service_account_iam_member" "stage" {
  for_each = { for grant in local.service_account_grants : "${grant.sa}/${grant.target}/${grant.role}" => grant }

  service_account_id = google_service_account.stage[each.value.target].name
  role               = each.value.role
  member             = "serviceAccount:${google_service_account.stage[each.value.sa].email}"
}

# The deployer deploys functions, jobs and the service to run as these accounts: actAs on
# each of them, not project-wide, and on nothing else in the project.
resource "google_service_account_iam_member" "deployer_acts_as" {
  for_each = local.service_accounts

  service_account_id = google_service_account.stage[each.key].name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${var.deployer_service_account_email}"
}

# Google creates the Pub/Sub service agent lazily; created here first, so the grant below
# never names an account that does not exist yet.
resource "google_project_service_identity" "pubsub_agent" {
  provider = google-beta

  project = var.project_id
  service = "pubsub.googleapis.com"
}

# Pub/Sub mints the push identity's OIDC tokens (needed in projects created before
# April 2021; harmless after).
resource "google_service_account_iam_member" "pubsub_agent_mints_push_tokens" {
  service_account_id = google_service_account.stage["push"].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = google_project_service_identity.pubsub_agent.member
}

# IAM grants take up to a few minutes to reach every Google service. The outputs wait
# for it, so the apply ends only when the deployer can use what it was given.
resource "time_sleep" "iam_propagation" {
  create_duration = "60s"

  triggers = {
    # dask_training's grants join only while it is on (dask.tf).
    grants = sha256(jsonencode(concat([keys(local.service_accounts), local.service_account_grants, local.signing_key_grants, var.deployer_service_account_email, var.notification_secrets], local.dask ? [local.dask_cluster_permissions] : [])))
  }

  depends_on = [
    google_service_account_iam_member.stage,
    google_service_account_iam_member.deployer_acts_as,
    google_service_account_iam_member.pubsub_agent_mints_push_tokens,
    google_kms_crypto_key_iam_member.manifest_signing,
    google_service_account_iam_member.train_acts_as_dask,
    google_project_iam_member.train_runs_dask_clusters,
    google_secret_manager_secret_iam_member.notify_reads_webhook_urls,
  ]
}
