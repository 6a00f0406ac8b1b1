# Training on a Dask cluster in the cloud (docs/architecture.md, "Where a Dask cluster
# runs on Google Cloud"): when a run's snapshot outgrows one machine, the training job
# creates a cluster of Compute Engine VMs with dask-cloudprovider's GCPCluster (the
# scheduler and workers run the training image: `dask scheduler`, `dask worker`), trains
# with lightgbm.dask as its client, and deletes the VMs when the run ends: nothing runs,
# and nothing is billed, between runs. Nothing here exists unless
# dask_training.enabled is true; the owner turns on the same switch in
# terraform/envs/bootstrap first (the VMs' account, the training account's custom role
# and actAs, the network and its firewall: dask.tf there), then this one.
#
# Here, on this configuration's resources: what the VMs' account may read and write
# (the runs' snapshots, logs, the training image), the training job's Direct VPC egress
# and the environment its code reads.

locals {
  dask = var.dask_training.enabled

  # The names terraform/envs/bootstrap/dask.tf gives them.
  dask_names = {
    account        = "${var.name_prefix}-dask"
    network        = "${var.name_prefix}-dask"
    vm_subnetwork  = "${var.name_prefix}-dask-vms"
    job_subnetwork = "${var.name_prefix}-dask-jobs"
  }
  dask_zone = coalesce(var.dask_training.zone, "${var.region}-b")

  # What the training job's code reads to start its cluster (GCPCluster's arguments).
  # MODELRAIL_DASK_GCP_NETWORK is a subnetwork's name: GCPCluster attaches each VM to
  # projects/<project>/regions/<the zone's region>/subnetworks/<network>.
  dask_env = local.dask ? {
    MODELRAIL_DASK_CLOUD               = "gcp"
    MODELRAIL_DASK_GCP_PROJECT         = var.project_id
    MODELRAIL_DASK_GCP_ZONE            = local.dask_zone
    MODELRAIL_DASK_GCP_NETWORK         = local.dask_names.vm_subnetwork
    MODELRAIL_DASK_GCP_MACHINE_TYPE    = var.dask_training.machine_type
    MODELRAIL_DASK_GCP_WORKERS         = tostring(var.dask_training.workers)
    MODELRAIL_DASK_GCP_SERVICE_ACCOUNT = data.google_service_account.dask[0].email
    MODELRAIL_DASK_GCP_IMAGE           = local.train_image
  } : {}

  # The training job reaches the scheduler's private address through the jobs'
  # subnetwork (the firewall admits that range to 8786/8787); Google APIs stay on the
  # default path.
  dask_vpc_access = local.dask ? {
    network    = local.dask_names.network
    subnetwork = local.dask_names.job_subnetwork
    egress     = "PRIVATE_RANGES_ONLY"
  } : null

  # The VMs read a run's snapshot and nothing else of the artifact bucket: objects
  # runs/<run_id>/snapshot/..., and the bucket itself, whose listing (object names, no
  # content) is how a reader finds a snapshot's parts. No write role anywhere.
  dask_snapshot_condition = join(" || ", [
    "resource.name == \"projects/_/buckets/${local.buckets.artifacts}\"",
    "(resource.name.startsWith(\"${local.artifact_objects}runs/\") && resource.name.extract(\"${local.artifact_objects}runs/{run_id}/snapshot/\") != \"\")",
  ])
}

# Fails the plan with "not found" until the owner has applied terraform/envs/bootstrap
# with dask_training.enabled.
data "google_service_account" "dask" {
  count = var.dask_training.enabled ? 1 : 0

  project    = var.project_id
  account_id = local.dask_names.account
}

resource "google_storage_bucket_iam_member" "dask_reads_snapshots" {
  count = var.dask_training.enabled ? 1 : 0

  bucket = local.buckets.artifacts
  role   = "roles/storage.objectViewer"
  member = "serviceAccount:${data.google_service_account.dask[0].email}"

  condition {
    title       = "dask-reads-run-snapshots"
    description = "The runs' snapshots (runs/<run_id>/snapshot/...) and the bucket's listing: what Dask workers read."
    expression  = local.dask_snapshot_condition
  }

  depends_on = [module.buckets]
}

# The VMs run the training image (docker pull with the VM's account).
resource "google_artifact_registry_repository_iam_member" "dask_pulls_images" {
  count = var.dask_training.enabled ? 1 : 0

  project    = var.project_id
  location   = var.region
  repository = module.docker_repository.name
  role       = "roles/artifactregistry.reader"
  member     = "serviceAccount:${data.google_service_account.dask[0].email}"
}

# Logs have no narrower resource than the project.
resource "google_project_iam_member" "dask_writes_logs" {
  count = var.dask_training.enabled ? 1 : 0

  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = "serviceAccount:${data.google_service_account.dask[0].email}"
}
