# Identities and grants. One service account per stage, each holding only roles on the
# resources it touches: no project-wide editor/owner and no project-level
# serviceAccountUser. docs/deploy.md lists the same grants in its IAM table and a test
# keeps the two equal.
locals {
  # The pipeline's service accounts, created by the owner with terraform/envs/bootstrap
  # (its local.service_accounts; tests/infra keeps the two lists equal). The deployer
  # looks them up: it may act as them, never set IAM on them.
  stage_accounts = toset([
    "validate", "launch_training", "train", "evaluate", "register", "deploy", "staging",
    "push", "function_build", "pr_build", "sweep", "scheduler", "notify",
    # The production services (production.tf): what staging serves with, and the
    # shadow grants staging does not hold.
    "production",
    # The scheduled monitor (monitor.tf): its job's account and its scheduler's.
    "monitor", "monitor_cron",
    "batch", "launch_batch",
  ])

  # Bucket-level reads (objectViewer: read and list objects). Writes are the
  # artifact_writes below, each limited to the objects its stage writes.
  bucket_grants = [
    { sa = "validate", bucket = "data", role = "roles/storage.objectViewer" },
    { sa = "validate", bucket = "artifacts", role = "roles/storage.objectViewer" },
    { sa = "launch_training", bucket = "artifacts", role = "roles/storage.objectViewer" },
    { sa = "train", bucket = "data", role = "roles/storage.objectViewer" },
    { sa = "train", bucket = "artifacts", role = "roles/storage.objectViewer" },
    { sa = "evaluate", bucket = "data", role = "roles/storage.objectViewer" },
    { sa = "evaluate", bucket = "artifacts", role = "roles/storage.objectViewer" },
    { sa = "register", bucket = "artifacts", role = "roles/storage.objectViewer" },
    { sa = "deploy", bucket = "artifacts", role = "roles/storage.objectViewer" },
    { sa = "staging", bucket = "artifacts", role = "roles/storage.objectViewer" },
    { sa = "production", bucket = "artifacts", role = "roles/storage.objectViewer" },
    { sa = "function_build", bucket = "sources", role = "roles/storage.objectViewer" },
    { sa = "sweep", bucket = "artifacts", role = "roles/storage.objectViewer" },
    { sa = "notify", bucket = "artifacts", role = "roles/storage.objectViewer" },
    # The monitor (monitor.tf): the prediction log, the registry, the run history.
    { sa = "monitor", bucket = "artifacts", role = "roles/storage.objectViewer" },
    # The uploads' listing, never their content (legacyBucketReader: storage.objects.list
    # and storage.buckets.get): the newest upload is what a policy retrain trains on
    # (src/modelrail/service/retrain_data.py), its row count validate's record.
    { sa = "monitor", bucket = "data", role = "roles/storage.legacyBucketReader" },
    { sa = "sweep", bucket = "data", role = "roles/storage.legacyBucketReader" },
    # Batch prediction reads the version it scores, the model's definition and its inputs
    # (batch.tf: it writes under batch/ alone).
    { sa = "batch", bucket = "artifacts", role = "roles/storage.objectViewer" },
    # ... and its listener reads the models' definitions, as every function does.
    { sa = "launch_batch", bucket = "artifacts", role = "roles/storage.objectViewer" },
  ]

  # What each stage writes in the artifact bucket, and nothing else it may write
  # (objectUser under an IAM condition: create, overwrite and delete these objects only).
  # run_objects: objects of any run, runs/<run_id>/<name> (src/modelrail/domain/runs.py and the
  # stages); run_suffixes: objects of any run whose names end so (a snapshot's parts);
  # prefixes: every object whose name starts so, but those ending in one of
  # except_suffixes. The registry (models/) is register's alone, but each model's
  # definition (models/<model>/definition.json), which only the operator and the deploy
  # build write (`modelrail add`); deploy and the sweep move a model's staging alias and
  # leases (model_writes below). validate parses untrusted CSVs: it writes its own run
  # outputs and cannot touch a model. tests/infra runs the pipeline and fails if a stage
  # writes outside its own list.
  artifact_writes = {
    validate = {
      run_objects = ["stages/validate.json", "reports/validation.json", "reports/contract-proposal.json", "snapshot/index.json", "snapshot/profile.json", "failed/validate.json", "claims/validate.json"]
      # The snapshot's parts and the stream's scratch objects, under names no other
      # stage's object ends with (src/modelrail/domain/dataset/snapshot.py).
      run_suffixes = [".snapshot.parquet", ".rowhashes"]
      prefixes     = []
    }
    launch_training = {
      run_objects = ["stages/launch_training.json", "failed/launch_training.json", "claims/launch_training.json"]
      prefixes    = []
    }
    train = {
      run_objects = ["stages/train.json", "candidate/model.txt", "candidate/candidate.json", "candidate/predictor-avx2.so", "candidate/predictor-portable.so"]
      prefixes    = []
    }
    evaluate = {
      run_objects = ["stages/evaluate.json", "reports/evaluation.json", "snapshot/reference.parquet", "failed/evaluate.json"]
      prefixes    = []
    }
    register = {
      run_objects     = ["stages/register.json", "failed/register.json"]
      prefixes        = ["models/"]
      except_suffixes = ["/definition.json"]
    }
    deploy = {
      run_objects = ["stages/deploy.json", "failed/deploy.json"]
      prefixes    = []
    }
    # The failure record of a stage that will never record by itself: validate's when its
    # job died, and the stages after it (src/modelrail/service/sweep.py).
    sweep = {
      run_objects = ["stages/validate.json", "stages/launch_training.json", "stages/train.json", "stages/evaluate.json", "stages/register.json", "stages/deploy.json"]
      prefixes    = []
    }
  }

  # What deploy and the sweep write of each model's registry, models/<model>/<name>
  # (a name ending in "-": every object whose name starts so), for every model of
  # var.models: the staging alias deploy moves and the staging lease it rolls out under;
  # the sweep's reconciliation holds the same lease, and it holds a stuck register's
  # lease while it ends that run (src/modelrail/service/sweep.py). One grant per stage
  # and model (google_storage_bucket_iam_member.model_writes), so no condition grows with
  # the number of models.
  model_writes = {
    deploy = ["aliases/staging.json", "leases/staging.json"]
    sweep = [
      "leases/staging.json", "leases/register-", "policies/schedule.json",
      # Production (production.tf): the sweep carries out approved promotions, under
      # production's lease, moving its alias and recording each outcome and its steps.
      "aliases/production.json", "leases/production.json", "promotions/", "rollouts/",
    ]
    # The monitor's [retrain] on_drift cool-down (src/modelrail/service/monitoring.py).
    monitor = ["policies/retrain-on-drift.json"]
  }
  # IAM Conditions name an object projects/_/buckets/<bucket>/objects/<name>.
  artifact_objects = "projects/_/buckets/${local.buckets.artifacts}/objects/"

  # Topic-level grants: each stage publishes its result event and pipeline-failed; the
  # sweep publishes pipeline-failed only.
  topic_grants = [
    { sa = "validate", topic = "dataset-validated", role = "roles/pubsub.publisher" },
    { sa = "validate", topic = "pipeline-failed", role = "roles/pubsub.publisher" },
    { sa = "launch_training", topic = "pipeline-failed", role = "roles/pubsub.publisher" },
    { sa = "train", topic = "model-trained", role = "roles/pubsub.publisher" },
    { sa = "train", topic = "pipeline-failed", role = "roles/pubsub.publisher" },
    { sa = "evaluate", topic = "model-evaluated", role = "roles/pubsub.publisher" },
    { sa = "evaluate", topic = "pipeline-failed", role = "roles/pubsub.publisher" },
    { sa = "register", topic = "model-registered", role = "roles/pubsub.publisher" },
    { sa = "register", topic = "pipeline-failed", role = "roles/pubsub.publisher" },
    { sa = "deploy", topic = "model-deployed", role = "roles/pubsub.publisher" },
    { sa = "deploy", topic = "pipeline-failed", role = "roles/pubsub.publisher" },
    { sa = "sweep", topic = "pipeline-failed", role = "roles/pubsub.publisher" },
    # A model's [retrain] schedule: the sweep publishes the retrain of each time it names.
    { sa = "sweep", topic = "retrain-requested", role = "roles/pubsub.publisher" },
    # The monitor (monitor.tf): a drifted window, and the retrain [retrain] on_drift starts.
    { sa = "monitor", topic = "drift-detected", role = "roles/pubsub.publisher" },
    { sa = "monitor", topic = "retrain-requested", role = "roles/pubsub.publisher" },
  ]

  # Grants on every model's staging service (each row once per model), the training job
  # and service accounts.
  staging_service_grants = [
    # get/update the service (new revision pinned to a version, rollback) ...
    { sa = "deploy", role = "roles/run.developer" },
    # ... and call it for the smoke test.
    { sa = "deploy", role = "roles/run.invoker" },
    # The scheduled sweep is also the reconciliation pass (src/modelrail/service/reconcile.py):
    # after a crash between a rollout and the alias move, it puts back the version the
    # staging alias names, signature checked, and smoke-tests it, as deploy does.
    { sa = "sweep", role = "roles/run.developer" },
    { sa = "sweep", role = "roles/run.invoker" },
  ]
  # The accounts whose services write a prediction log, and whose logs these are
  # (google_storage_bucket_iam_member.prediction_log).
  prediction_log_writers = {
    staging    = "staging services' prediction logs"
    production = "production services' prediction logs"
  }
  training_job_grants = [
    # run_job with the event as an environment override (run.jobs.runWithOverrides).
    { sa = "launch_training", role = "roles/run.jobsExecutorWithOverrides" },
    # read an execution's state, to find a training run that died (run.executions.get).
    { sa = "sweep", role = "roles/run.viewer" },
  ]
}

# Fails the plan with "not found" until the owner has applied terraform/envs/bootstrap.
data "google_service_account" "stage" {
  for_each = local.stage_accounts

  project    = var.project_id
  account_id = "${var.name_prefix}-${replace(each.key, "_", "-")}"
}

resource "google_storage_bucket_iam_member" "stage" {
  for_each = { for grant in local.bucket_grants : "${grant.sa}/${grant.bucket}/${grant.role}" => grant }

  bucket = local.buckets[each.value.bucket]
  role   = each.value.role
  member = "serviceAccount:${data.google_service_account.stage[each.value.sa].email}"

  depends_on = [module.buckets, module.source_bucket]
}

resource "google_storage_bucket_iam_member" "artifact_writes" {
  for_each = local.artifact_writes

  bucket = local.buckets.artifacts
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${data.google_service_account.stage[each.key].email}"

  # Listing is a bucket-level permission the condition never matches: it comes with the
  # unconditional objectViewer grant above.
  condition {
    title       = "${each.key}-writes-its-own-objects"
    description = "The objects the ${each.key} stage writes (terraform/envs/dev/iam.tf, local.artifact_writes)."
    expression = join(" || ", concat(
      ["(resource.name.startsWith(\"${local.artifact_objects}runs/\") && (${join(" || ", concat(
        [for name in each.value.run_objects : "resource.name.endsWith(\"/${name}\")"],
        [for suffix in lookup(each.value, "run_suffixes", []) : "resource.name.endsWith(\"${suffix}\")"],
      ))}))"],
      [for prefix in each.value.prefixes : length(lookup(each.value, "except_suffixes", [])) == 0
        ? "resource.name.startsWith(\"${local.artifact_objects}${prefix}\")"
        : "(resource.name.startsWith(\"${local.artifact_objects}${prefix}\") && !(${join(" || ", [for suffix in lookup(each.value, "except_suffixes", []) : "resource.name.endsWith(\"${suffix}\")"])}))"
      ],
    ))
  }

  depends_on = [module.buckets]
}

resource "google_storage_bucket_iam_member" "model_writes" {
  for_each = {
    for pair in setproduct(keys(local.model_writes), var.models) :
    "${pair[0]}/${pair[1]}" => { sa = pair[0], model = pair[1] }
  }

  bucket = local.buckets.artifacts
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${data.google_service_account.stage[each.value.sa].email}"

  condition {
    title       = "${each.value.sa}-writes-${each.value.model}-registry-objects"
    description = "The objects of the registry of model ${each.value.model} that the ${each.value.sa} stage writes (terraform/envs/dev/iam.tf, local.model_writes)."
    expression = join(" || ", [
      for name in local.model_writes[each.value.sa] :
      "resource.name.startsWith(\"${local.artifact_objects}models/${each.value.model}/${name}\")"
    ])
  }

  depends_on = [module.buckets]
}

# The prediction logs of the staging and the production services
# (src/modelrail/serving/prediction_log.py): each batch is a new object under
# predictions/. objectCreator creates objects, and cannot read, overwrite or delete one,
# so a service can neither alter its log nor anything else.
resource "google_storage_bucket_iam_member" "prediction_log" {
  for_each = local.prediction_log_writers

  bucket = local.buckets.artifacts
  role   = "roles/storage.objectCreator"
  member = "serviceAccount:${data.google_service_account.stage[each.key].email}"

  condition {
    title       = "${each.key}-writes-its-prediction-log"
    description = "New objects under predictions/: the ${each.value}."
    expression  = "resource.name.startsWith(\"${local.artifact_objects}predictions/\")"
  }

  depends_on = [module.buckets]
}

# The staging account's grant, from before the production services had an account of
# their own: kept, not replaced.
moved {
  from = google_storage_bucket_iam_member.prediction_log
  to   = google_storage_bucket_iam_member.prediction_log["staging"]
}

# The notifier's delivery records (src/modelrail/domain/notifications.py): one object per
# event and webhook under notifications/, rewritten as its attempts go. Nothing of a run
# or of a model's registry: the notifier cannot change a run.
resource "google_storage_bucket_iam_member" "notification_records" {
  bucket = local.buckets.artifacts
  role   = "roles/storage.objectUser"
  member = "serviceAccount:${data.google_service_account.stage["notify"].email}"

  condition {
    title       = "notify-writes-its-delivery-records"
    description = "Objects under notifications/: the notifier's delivery records."
    expression  = "resource.name.startsWith(\"${local.artifact_objects}notifications/\")"
  }

  depends_on = [module.buckets]
}

resource "google_pubsub_topic_iam_member" "stage" {
  for_each = { for grant in local.topic_grants : "${grant.sa}/${grant.topic}/${grant.role}" => grant }

  project = var.project_id
  topic   = module.pubsub.topic_ids[each.value.topic]
  role    = each.value.role
  member  = "serviceAccount:${data.google_service_account.stage[each.value.sa].email}"
}

resource "google_cloud_run_v2_service_iam_member" "stage" {
  for_each = {
    for pair in setproduct(var.models, local.staging_service_grants) :
    "${pair[0]}/${pair[1].sa}/${pair[1].role}" => merge(pair[1], { model = pair[0] })
  }

  project  = var.project_id
  location = var.region
  name     = module.staging_service[each.value.model].name
  role     = each.value.role
  member   = "serviceAccount:${data.google_service_account.stage[each.value.sa].email}"
}

resource "google_cloud_run_v2_job_iam_member" "stage" {
  for_each = { for grant in local.training_job_grants : "${grant.sa}/${grant.role}" => grant }

  project  = var.project_id
  location = var.region
  name     = module.training_job.name
  role     = each.value.role
  member   = "serviceAccount:${data.google_service_account.stage[each.value.sa].email}"
}

# The functions builder: push the built images, read the source archives, write build
# logs. Logs have no narrower resource than the project.
resource "google_artifact_registry_repository_iam_member" "function_build_pushes_images" {
  project    = var.project_id
  location   = var.region
  repository = module.function_images.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${data.google_service_account.stage["function_build"].email}"
}

resource "google_project_iam_member" "function_build_writes_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${data.google_service_account.stage["function_build"].email}"
}

# Pull-request builds run the pull request's code: their account writes build logs and
# holds nothing else (no admin role, no actAs, no bucket), so a pull request cannot
# deploy, read the pipeline's data or touch the registry.
resource "google_project_iam_member" "pr_build_writes_logs" {
  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${data.google_service_account.stage["pr_build"].email}"
}

# Cloud Functions (2nd gen) copies each function's archive into Google's own bucket,
# gcf-v2-sources-<project number>-<region>, and the build reads it from there, as the
# build account: with only the sources bucket above, every build is denied its source.
# That bucket appears with the first function, so no bucket-level grant can precede it;
# a project-level objectViewer under a condition on that bucket's name (Cloud Storage
# evaluates resource.name; its objects are .../objects/<name>) lets it read that bucket
# and nothing else in the project.
resource "google_project_iam_member" "function_build_reads_gcf_sources" {
  project = var.project_id
  role    = "roles/storage.objectViewer"
  member  = "serviceAccount:${data.google_service_account.stage["function_build"].email}"

  condition {
    title       = "only-gcf-v2-sources"
    description = "Cloud Functions' copy of the function sources (gcf-v2-sources-<number>-<region>), nothing else."
    expression  = "resource.name == \"${local.gcf_sources_bucket}\" || resource.name.startsWith(\"${local.gcf_sources_bucket}/objects/\")"
  }
}

locals {
  gcf_sources_bucket = "projects/_/buckets/gcf-v2-sources-${data.google_project.this.number}-${var.region}"

  # What the grants a compute resource uses on creation or at start are made from: a
  # change to any of them waits for propagation again.
  # dask_training's grants join only while it is on: off, the list (and the wait) is
  # what it was before the switch existed.
  propagated_grants = concat([
    local.bucket_grants, local.artifact_writes, local.topic_grants,
    local.model_repository_grants, local.vertex_grants, var.vertex_model_registry,
  ], local.dask ? [local.dask_snapshot_condition] : [], [local.model_writes, var.models])
}

# IAM grants take up to a few minutes to reach every Google service, and this apply uses
# them at once: the functions' builds (the build account's grants), the training job and
# the staging service at start (their buckets), the Scheduler job and the push
# subscriptions. Every one of those depends on this wait (tests/infra checks it); the
# grants on those resources themselves (invokers) come after them and are used only when
# a message or a schedule arrives, which Pub/Sub and Cloud Scheduler retry.
resource "time_sleep" "iam_propagation" {
  create_duration = "60s"

  triggers = {
    grants = sha256(jsonencode(local.propagated_grants))
  }

  depends_on = [
    google_storage_bucket_iam_member.stage,
    google_storage_bucket_iam_member.artifact_writes,
    google_storage_bucket_iam_member.model_writes,
    google_storage_bucket_iam_member.prediction_log,
    google_storage_bucket_iam_member.shadow_log,
    google_storage_bucket_iam_member.notification_records,
    google_storage_bucket_iam_member.monitoring_reports,
    google_storage_bucket_iam_member.batch_writes,
    google_pubsub_topic_iam_member.stage,
    google_artifact_registry_repository_iam_member.function_build_pushes_images,
    google_artifact_registry_repository_iam_member.models,
    google_project_iam_member.function_build_writes_logs,
    google_project_iam_member.function_build_reads_gcf_sources,
    google_project_iam_member.pr_build_writes_logs,
    google_pubsub_topic_iam_member.gcs_publishes_uploads,
    google_project_iam_member.vertex,
    google_storage_bucket_iam_member.vertex_agent_reads_artifacts,
    google_storage_bucket_iam_member.dask_reads_snapshots,
    google_artifact_registry_repository_iam_member.dask_pulls_images,
    google_project_iam_member.dask_writes_logs,
    # Production (production.tf): the people who propose and approve promotions.
    google_storage_bucket_iam_member.promotion_proposers_read,
    google_storage_bucket_iam_member.promotion_approvers_read,
    google_storage_bucket_iam_member.promotion_proposers,
    google_storage_bucket_iam_member.promotion_approvers,
    # The production canary (production.tf): the sweep reads the revisions' metrics.
    google_project_iam_member.sweep_reads_run_metrics,
  ]
}

# Deployments made before terraform/envs/bootstrap held the accounts and the grants on
# them in this configuration's state. Forgotten here, not destroyed (they run every
# stage): the owner adopts them in the bootstrap root with `terraform import`
# (docs/deploy.md, "Upgrading a deployment made before the bootstrap root").
removed {
  from = google_service_account.stage
  lifecycle {
    destroy = false
  }
}

removed {
  from = google_service_account_iam_member.stage
  lifecycle {
    destroy = false
  }
}

removed {
  from = google_service_account_iam_member.pubsub_agent_mints_push_tokens
  lifecycle {
    destroy = false
  }
}

removed {
  from = google_service_account_iam_member.deployer_acts_as
  lifecycle {
    destroy = false
  }
}
