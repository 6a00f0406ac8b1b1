# Where training's Dask cluster runs in the cloud (docs/architecture.md, "Where a Dask
# cluster runs on Google Cloud"): Compute Engine VMs that dask-cloudprovider's GCPCluster
# creates for one training run from inside the training job (the Dask client) and deletes
# when the run ends. Nothing here exists unless dask_training.enabled is true; turn it on
# here first (the owner), then in terraform/envs/dev (docs/deploy.md).
#
# The owner's, not the deployer's: the VMs' account, the training account's right to
# create VMs as it (actAs) and the custom role are grants on accounts and role
# definitions, and the firewall decides who may reach the cluster. The deployer holds no
# compute, IAM-role or firewall administration for any of it.

locals {
  dask = var.dask_training.enabled

  # envs/dev derives the same names from name_prefix (its local.dask_names).
  dask_network        = "${var.name_prefix}-dask"
  dask_vm_subnetwork  = "${var.name_prefix}-dask-vms"
  dask_job_subnetwork = "${var.name_prefix}-dask-jobs"

  # What GCPCluster calls as the training account (dask_cloudprovider/gcp/instances.py:
  # GCPInstance.create_vm, update_status, get_internal_ip, close), and what Compute
  # Engine checks for the body it sends to instances.insert. Nothing else: no
  # *.setIamPolicy, no compute.subnetworks.useExternalIp (so no VM can get a public
  # address: the code runs GCPCluster with public_ingress=False), no firewall, network
  # or image administration. compute.images.useReadOnly is not needed: public images
  # (cos-cloud, ubuntu-os-cloud) grant it to every authenticated caller.
  dask_cluster_permissions = [
    # instances.insert: the scheduler VM and each worker VM.
    "compute.instances.create",
    # instances.list(filter="name=..."): GCPCluster polls each VM's status and reads its
    # internal IP this way (it never calls instances.get or zoneOperations.get).
    "compute.instances.list",
    # instances.delete: GCPCluster.close(), at the end of the run.
    "compute.instances.delete",
    # The insert body's boot disk (initializeParams: a new persistent disk per VM).
    "compute.disks.create",
    # Deleting a VM deletes its boot disk with it (autoDelete = true in the insert body).
    "compute.disks.delete",
    # The insert body's metadata: cloud-init user-data holding the docker run command
    # line, its environment and the cluster's TLS credentials.
    "compute.instances.setMetadata",
    # The insert body's network tags (GCPCluster sets http-server and https-server; the
    # network below has no rule for them).
    "compute.instances.setTags",
    # The insert body's labels (instance_labels: which run a VM belongs to).
    "compute.instances.setLabels",
    # The insert body's service account: the dask account (actAs on it, below).
    "compute.instances.setServiceAccount",
    # The insert body's network interface: the VMs' subnetwork.
    "compute.subnetworks.use",
  ]
}

resource "google_project_service" "compute" {
  count = local.dask ? 1 : 0

  project            = var.project_id
  service            = "compute.googleapis.com"
  disable_on_destroy = false
}

resource "google_service_account" "dask" {
  count = local.dask ? 1 : 0

  project      = var.project_id
  account_id   = "${var.name_prefix}-dask"
  display_name = "modelrail dask"
  description  = "Dask scheduler and worker VMs of one training run: read the run's snapshot, write logs, pull the training image"
}

# GCPCluster creates the VMs with the dask account: actAs on it, and on no other account.
resource "google_service_account_iam_member" "train_acts_as_dask" {
  count = local.dask ? 1 : 0

  service_account_id = google_service_account.dask[0].name
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.stage["train"].email}"
}

resource "google_project_iam_custom_role" "dask_cluster" {
  count = local.dask ? 1 : 0

  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_dask_cluster"
  title       = "modelrail Dask cluster"
  description = "Create, list and delete the Compute Engine VMs of a training run's Dask cluster (dask-cloudprovider GCPCluster); terraform/envs/bootstrap/dask.tf justifies each permission."
  permissions = local.dask_cluster_permissions
}

# Project-level: an instance that does not exist yet has no IAM policy to grant on, and
# instances.list is a zone-level call. The role is bounded by its permissions (above):
# VMs without public addresses that run only as the dask account.
resource "google_project_iam_member" "train_runs_dask_clusters" {
  count = local.dask ? 1 : 0

  project = var.project_id
  role    = google_project_iam_custom_role.dask_cluster[0].name
  member  = "serviceAccount:${google_service_account.stage["train"].email}"
}

# A network of its own: no rule of the default network (ssh from anywhere, http-server)
# applies to the VMs, and the only ingress is the two rules below.
resource "google_compute_network" "dask" {
  count = local.dask ? 1 : 0

  project                 = var.project_id
  name                    = local.dask_network
  description             = "Dask clusters of training runs (terraform/envs/bootstrap/dask.tf)."
  auto_create_subnetworks = false
  depends_on              = [google_project_service.compute]
}

# The VMs. Private Google Access: without public addresses they still reach Cloud
# Storage (the snapshot), Artifact Registry (the image) and Cloud Logging.
resource "google_compute_subnetwork" "dask_vms" {
  count = local.dask ? 1 : 0

  project                  = var.project_id
  region                   = var.region
  name                     = local.dask_vm_subnetwork
  network                  = google_compute_network.dask[0].id
  ip_cidr_range            = var.dask_training.vm_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# The training job's Direct VPC egress: its addresses come from this range alone, so the
# firewall can tell the training job from anything else.
resource "google_compute_subnetwork" "dask_jobs" {
  count = local.dask ? 1 : 0

  project                  = var.project_id
  region                   = var.region
  name                     = local.dask_job_subnetwork
  network                  = google_compute_network.dask[0].id
  ip_cidr_range            = var.dask_training.job_cidr
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_10_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }
}

# Between the cluster's VMs: the scheduler (8786), its dashboard (8787, never exposed
# outside the network), and the ports workers, nannies and LightGBM's own network listen
# on (port 0: the kernel's ephemeral range). Targets and sources are VMs running as the
# dask account, which only the training account can start VMs as: GCPCluster's fixed
# network tags (http-server, https-server) cannot tell a Dask VM from any other.
resource "google_compute_firewall" "dask_internal" {
  count = local.dask ? 1 : 0

  project                 = var.project_id
  name                    = "${local.dask_network}-internal"
  network                 = google_compute_network.dask[0].id
  description             = "Dask scheduler, dashboard and worker ports between the VMs of a training run's cluster."
  direction               = "INGRESS"
  priority                = 1000
  source_service_accounts = [google_service_account.dask[0].email]
  target_service_accounts = [google_service_account.dask[0].email]

  allow {
    protocol = "tcp"
    ports    = ["8786", "8787", var.dask_training.worker_ports]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

# From the training job (the Dask client) to the scheduler and its dashboard.
resource "google_compute_firewall" "dask_from_training" {
  count = local.dask ? 1 : 0

  project                 = var.project_id
  name                    = "${local.dask_network}-from-training"
  network                 = google_compute_network.dask[0].id
  description             = "The training job (Direct VPC egress from ${local.dask_job_subnetwork}) to the Dask scheduler and dashboard."
  direction               = "INGRESS"
  priority                = 1000
  source_ranges           = [var.dask_training.job_cidr]
  target_service_accounts = [google_service_account.dask[0].email]

  allow {
    protocol = "tcp"
    ports    = ["8786", "8787"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}
