provider "google" {
  project = var.project_id
  region  = var.region
}

# For google_project_service_identity alone (vertex.tf).
provider "google-beta" {
  project = var.project_id
  region  = var.region
}

locals {
  # Relative to the working directory (terraform -chdir=terraform/envs/dev), so plans
  # made on a laptop and in Cloud Build see the same paths.
  repo_root = "${path.root}/../../.."

  # The single source of truth for topics, subscriptions and consumers: the local
  # runtimes read the same file, so the cloud graph and the local graph cannot drift.
  topology = yamldecode(file("${local.repo_root}/topology.yaml"))

  push_subscriptions = [for sub in local.topology.subscriptions : sub if sub.consumer != null]
  consumers          = toset([for sub in local.push_subscriptions : sub.consumer])

  # A function may run as long as its slowest subscription's ack deadline: past that,
  # Pub/Sub would redeliver while it still runs.
  function_timeouts = {
    for sub in local.push_subscriptions :
    sub.consumer => try(sub.ack_deadline_seconds, local.topology.defaults.ack_deadline_seconds)...
  }

  labels = merge(var.labels, { app = "modelrail", env = var.environment })

  # Every consumer gets settings, also one missing from var.functions.
  function_settings = {
    for consumer in local.consumers : consumer => merge(
      { memory = "512Mi", cpu = "1", min_instances = 0, max_instances = 5, concurrency = 1 },
      try(var.functions[consumer], {}),
    )
  }

  buckets = {
    data      = "${var.project_id}-${var.name_prefix}-data"
    artifacts = "${var.project_id}-${var.name_prefix}-artifacts"
    sources   = "${var.project_id}-${var.name_prefix}-sources"
  }

  training_job_name = "${var.name_prefix}-train"
  # The prefix of the staging services' names: model M is served by <prefix>-M
  # (module.staging_service), the name the deploy stage derives from
  # MODELRAIL_STAGING_SERVICE.
  staging_service_name = "${var.name_prefix}-staging"

  # What every stage, the training job and the launcher read (Settings.from_env).
  common_env = {
    MODELRAIL_MODE            = "cloud"
    GOOGLE_CLOUD_PROJECT      = var.project_id
    MODELRAIL_REGION          = var.region
    MODELRAIL_DATA_BUCKET     = local.buckets.data
    MODELRAIL_ARTIFACT_BUCKET = local.buckets.artifacts
    MODELRAIL_CODE_VERSION    = var.code_version
    MODELRAIL_TRAINING_JOB    = local.training_job_name
    MODELRAIL_STAGING_SERVICE = local.staging_service_name
    MODELRAIL_HOME            = "/tmp/modelrail" # the only writable path on Cloud Run
    # Where register publishes versions (artifact_registry.tf).
    MODELRAIL_ARTIFACT_REPOSITORY = google_artifact_registry_repository.models.repository_id
    # The key version register signs manifests with (kms.tf).
    MODELRAIL_SIGNING_KEY = local.manifest_signing_key
  }

  # The training image runs two jobs, training and the sweep (sweep.tf), with common_env
  # and the topology it copies to /app (services/train-job/Dockerfile). No
  # MODELRAIL_CONFIG: each model's definition is read from the artifact bucket
  # (models/<model>/definition.json).
  train_image = "${module.docker_repository.url}/train:${var.code_version}"
  train_image_env = merge(local.common_env, {
    MODELRAIL_TOPOLOGY = "/app/topology.yaml"
  })
}

data "google_project" "this" {
  project_id = var.project_id
}

module "apis" {
  source     = "../../modules/apis"
  project_id = var.project_id
  services = [
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudkms.googleapis.com",
    "cloudfunctions.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudscheduler.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "serviceusage.googleapis.com",
    "storage.googleapis.com",
  ]
}

# ---------------------------------------------------------------- storage

# The data and artifact buckets: the same settings, kept with their objects.
module "buckets" {
  source        = "../../modules/bucket"
  for_each      = { data = local.buckets.data, artifacts = local.buckets.artifacts }
  project_id    = var.project_id
  name          = each.value
  location      = var.region
  labels        = local.labels
  force_destroy = var.force_destroy_buckets
  # The staging services' prediction logs (docs/service.md) are kept this long.
  expiring_prefixes = each.key == "artifacts" ? { "predictions/" = var.prediction_log_retention_days } : {}
  depends_on        = [module.apis]
}

# Deployments made when each bucket had its own block keep their buckets (and the
# models in them) instead of replacing them.
moved {
  from = module.data_bucket
  to   = module.buckets["data"]
}

moved {
  from = module.artifact_bucket
  to   = module.buckets["artifacts"]
}

module "source_bucket" {
  source                   = "../../modules/bucket"
  project_id               = var.project_id
  name                     = local.buckets.sources
  location                 = var.region
  labels                   = local.labels
  force_destroy            = true # only function archives, rebuilt from git
  noncurrent_versions_kept = 1
  noncurrent_days_kept     = 7
  depends_on               = [module.apis]
}

# Object-finalize on the data bucket publishes to data-uploaded: an upload starts a run.
# Only uploads do (uploads/<model>/...: the folder names the model the run is for).
data "google_storage_project_service_account" "gcs" {
  project    = var.project_id
  depends_on = [module.apis]
}

resource "google_pubsub_topic_iam_member" "gcs_publishes_uploads" {
  project = var.project_id
  topic   = module.pubsub.topic_ids["data-uploaded"]
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${data.google_storage_project_service_account.gcs.email_address}"
}

resource "google_storage_notification" "data_uploaded" {
  bucket         = module.buckets["data"].name
  payload_format = "JSON_API_V1"
  topic          = module.pubsub.topic_ids["data-uploaded"]
  event_types    = ["OBJECT_FINALIZE"]
  # Changing it replaces the notification: uploads finished between the two are not
  # announced (retrain-requested picks them up).
  object_name_prefix = "uploads/"
  depends_on         = [google_pubsub_topic_iam_member.gcs_publishes_uploads]
}

# ---------------------------------------------------------------- images

module "docker_repository" {
  source        = "../../modules/artifact_registry"
  project_id    = var.project_id
  region        = var.region
  repository_id = var.name_prefix
  description   = "modelrail images (staging service, training job), tagged with the commit SHA."
  labels        = local.labels
  depends_on    = [module.apis]
}

module "function_images" {
  source         = "../../modules/artifact_registry"
  project_id     = var.project_id
  region         = var.region
  repository_id  = "${var.name_prefix}-functions"
  description    = "Images Cloud Functions builds from the stage sources."
  immutable_tags = false # the functions builder re-tags its images
  keep_recent    = 3
  labels         = local.labels
  depends_on     = [module.apis]
}

# ---------------------------------------------------------------- event graph

module "pubsub" {
  source         = "../../modules/pubsub"
  project_id     = var.project_id
  project_number = data.google_project.this.number
  topology       = local.topology
  labels         = local.labels
  push_endpoints = {
    for consumer, function in module.functions : consumer => {
      url                   = function.uri
      service_account_email = data.google_service_account.stage["push"].email
    }
  }
  depends_on = [module.apis]
}

# ---------------------------------------------------------------- compute

module "functions" {
  source   = "../../modules/function"
  for_each = local.consumers

  project_id  = var.project_id
  region      = var.region
  name        = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  description = "modelrail ${each.key} stage (functions/${each.key}/main.py)"
  labels      = local.labels

  source_dir    = "${local.repo_root}/build/functions/${each.key}"
  archive_dir   = "${local.repo_root}/build/archives"
  source_bucket = module.source_bucket.name
  runtime       = "python311"
  entry_point   = "handle"

  build_service_account_id      = data.google_service_account.stage["function_build"].id
  docker_repository_id          = module.function_images.id
  service_account_email         = data.google_service_account.stage[each.key].email
  invoker_service_account_email = data.google_service_account.stage["push"].email

  available_memory   = local.function_settings[each.key].memory
  available_cpu      = local.function_settings[each.key].cpu
  min_instance_count = local.function_settings[each.key].min_instances
  max_instance_count = local.function_settings[each.key].max_instances
  concurrency        = local.function_settings[each.key].concurrency
  timeout_seconds    = max(local.function_timeouts[each.key]...)

  environment_variables = merge(local.common_env, local.vertex_env, {
    # Staged at the source root by `make stage`; Cloud Functions runs from there. The
    # models' definitions are read from the artifact bucket, not from the source.
    MODELRAIL_TOPOLOGY = "topology.yaml"
    }, each.key == "validate" ? local.validate_function_env : {},
  each.key == "launch_batch" ? local.batch_function_env : {})

  # The build account's grants and the stage accounts' (iam.tf), propagated.
  depends_on = [time_sleep.iam_propagation]
}

module "training_job" {
  source                = "../../modules/run_job"
  project_id            = var.project_id
  region                = var.region
  name                  = local.training_job_name
  image                 = local.train_image
  service_account_email = data.google_service_account.stage["train"].email
  cpu                   = var.training_job.cpu
  memory                = var.training_job.memory
  timeout_seconds       = var.training_job.timeout_seconds
  max_retries           = var.training_job.max_retries
  labels                = local.labels
  # With dask_training: where its cluster runs, and the way to it (dask.tf).
  environment_variables = merge(local.train_image_env, local.dask_env)
  vpc_access            = local.dask_vpc_access
  depends_on            = [module.apis, time_sleep.iam_propagation]
}

# One staging service per model, <prefix>-<model>, pinned to its model by
# MODELRAIL_MODEL_NAME: the deploy stage rolls a version out by updating the service of
# the version's model, and creates none.
module "staging_service" {
  source                = "../../modules/run_service"
  for_each              = toset(var.models)
  project_id            = var.project_id
  region                = var.region
  name                  = "${local.staging_service_name}-${each.key}"
  image                 = "${module.docker_repository.url}/staging:${var.code_version}"
  service_account_email = data.google_service_account.stage["staging"].email
  ingress               = var.staging_service.ingress
  invoker_members       = var.staging_service.invoker_members
  cpu                   = var.staging_service.cpu
  memory                = var.staging_service.memory
  concurrency           = var.staging_service.concurrency
  min_instance_count    = var.staging_service.min_instances
  max_instance_count    = var.staging_service.max_instances
  labels                = local.labels
  # The first revision follows the registry's staging alias (not ready until a version
  # exists); the deploy stage then pins MODELRAIL_MODEL_VERSION with a new revision.
  environment_variables = {
    MODELRAIL_MODE            = "cloud"
    GOOGLE_CLOUD_PROJECT      = var.project_id
    MODELRAIL_ARTIFACT_BUCKET = local.buckets.artifacts
    MODELRAIL_MODEL_NAME      = each.key
    MODELRAIL_MODEL_ALIAS     = "staging"
    # The key whose signatures it trusts (kms.tf); the deploy stage keeps it current.
    MODELRAIL_SIGNING_KEY = local.manifest_signing_key
  }
  depends_on = [module.apis, time_sleep.iam_propagation]
}

# ---------------------------------------------------------------- delivery

module "cloudbuild_triggers" {
  source                       = "../../modules/cloudbuild_triggers"
  count                        = var.github_owner == "" ? 0 : 1
  project_id                   = var.project_id
  name_prefix                  = var.name_prefix
  github_owner                 = var.github_owner
  github_repository            = var.github_repository
  branch                       = var.deploy_branch
  deploy_service_account_id    = "projects/${var.project_id}/serviceAccounts/${var.deployer_service_account_email}"
  pr_checks_service_account_id = data.google_service_account.stage["pr_build"].id
  deploy_substitutions = {
    _REGION          = var.region
    _REPOSITORY      = module.docker_repository.name
    _TF_STATE_BUCKET = var.tf_state_bucket
    _TF_ENV          = var.environment
    _RETRAIN_TOPIC   = "retrain-requested"
    # Where `modelrail add` writes each model's definition, and the retrain step finds
    # the models installed (cloudbuild/deploy.yaml).
    _ARTIFACT_BUCKET = local.buckets.artifacts
  }
  depends_on = [module.apis]
}
