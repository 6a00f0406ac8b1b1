variable "project_id" {
  description = "The Google Cloud project the pipeline runs in."
  type        = string
}

variable "region" {
  description = "The region of the buckets, functions, job, service and image repository."
  type        = string
  default     = "europe-west1"

  # Also a Cloud Build substitution (_REGION): an allow-list, like every value handed on.
  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]+$", var.region))
    error_message = "region must be a Google Cloud region such as europe-west1."
  }
}

variable "environment" {
  description = "The environment name, used in labels and the Terraform state prefix."
  type        = string
  default     = "dev"

  # Also the Cloud Build substitution _TF_ENV, which make checks against the same set
  # (mk/infra.mk).
  validation {
    condition     = can(regex("^[a-z0-9_-]{1,30}$", var.environment))
    error_message = "environment: 1-30 lowercase letters, digits, '-' or '_'."
  }
}

variable "name_prefix" {
  description = "Prefix of every resource name except topics and subscriptions (those are named exactly as in topology.yaml)."
  type        = string
  default     = "modelrail"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{2,13}$", var.name_prefix))
    error_message = "name_prefix: 3-14 lowercase letters, digits or hyphens, starting with a letter (service account ids are at most 30 characters)."
  }
}

variable "code_version" {
  description = "The commit SHA being deployed: the image tag of the staging service and the training job, and MODELRAIL_CODE_VERSION (lineage) everywhere."
  type        = string

  validation {
    condition     = can(regex("^[0-9a-f]{7,40}$", var.code_version))
    error_message = "code_version must be a git commit SHA (7-40 lowercase hex digits)."
  }
}

variable "models" {
  description = "The models this installation holds, by name ([model].name of each one's pipeline.toml). Each gets its own staging service, <name_prefix>-staging-<model>; its definition is the object models/<model>/definition.json in the artifact bucket (written by `modelrail add`, docs/deploy.md)."
  type        = list(string)
  default     = ["penguins"]

  validation {
    condition     = length(var.models) > 0
    error_message = "models must name at least one model."
  }

  validation {
    condition     = length(distinct(var.models)) == length(var.models)
    error_message = "models names a model more than once."
  }

  # The application's rule for a model name: it is a folder of both buckets and the
  # suffix of the model's staging service.
  validation {
    condition     = alltrue([for model in var.models : can(regex("^[a-z]([a-z0-9-]{0,28}[a-z0-9])?$", model))])
    error_message = "Each model name is 1-30 lowercase letters, digits or hyphens, starting with a letter and not ending with a hyphen."
  }
}

# Deployments made before models existed may still set model_name in terraform.tfvars,
# which Terraform would only warn about: refused here, so such a plan stops instead of
# serving the default model.
variable "model_name" {
  description = "Replaced by models (a list): set models = [\"<name>\"] instead."
  type        = string
  default     = null

  validation {
    condition     = var.model_name == null
    error_message = "model_name is replaced by models: write models = [\"<name>\"] in terraform.tfvars (docs/deploy.md, \"More than one model\")."
  }
}

variable "deployer_service_account_email" {
  description = "The service account Cloud Build runs terraform apply as (created once by hand, docs/deploy.md step 3)."
  type        = string
}

variable "tf_state_bucket" {
  description = "The bucket holding Terraform state (passed to the deploy pipeline as _TF_STATE_BUCKET)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$", var.tf_state_bucket))
    error_message = "tf_state_bucket must be a bucket name: 3-63 lowercase letters, digits, '.', '-' or '_'."
  }
}

variable "github_owner" {
  description = "The GitHub owner of the repository connected to Cloud Build. Empty: no triggers (deploy by hand)."
  type        = string
  default     = ""
}

variable "github_repository" {
  description = "The GitHub repository name connected to Cloud Build."
  type        = string
  default     = "modelrail"
}

variable "deploy_branch" {
  description = "Pushes to this branch deploy; pull requests into it run the checks."
  type        = string
  default     = "main"
}

variable "functions" {
  description = "Cost-relevant settings of each stage function: memory, vCPUs, warm instances (billed while idle), the instance ceiling and the requests one instance takes at once."
  type = map(object({
    memory        = optional(string, "512Mi")
    cpu           = optional(string, "1")
    min_instances = optional(number, 0)
    max_instances = optional(number, 5)
    concurrency   = optional(number, 1)
  }))
  default = {
    validate        = { memory = "1Gi" }
    launch_training = { memory = "256Mi", cpu = "0.167" }
    evaluate        = { memory = "2Gi" }
    register        = { memory = "512Mi" }
    # Rollouts take turns on the staging lease (src/modelrail/service/stages/deploy.py): a burst
    # of pushes waits in one instance instead of being refused with 429s.
    deploy = { memory = "512Mi", max_instances = 1, concurrency = 10 }
  }
}

variable "training_job" {
  description = "Cost-relevant settings of the training job: vCPUs, memory, the longest run and task retries."
  type = object({
    cpu             = optional(string, "2")
    memory          = optional(string, "4Gi")
    timeout_seconds = optional(number, 3600)
    max_retries     = optional(number, 1)
  })
  default = {}
}

variable "validate_job" {
  description = "The validate job (validate_job.tf), which validates uploads above validate_in_job_above_mb: vCPUs, memory, the longest validation and task retries. The defaults suit CSVs of several GB (validation streams batches: memory is bounded by the batch, not the file)."
  type = object({
    cpu             = optional(string, "2")
    memory          = optional(string, "4Gi")
    timeout_seconds = optional(number, 3600)
    max_retries     = optional(number, 1)
  })
  default = {}
}

variable "validate_in_job_above_mb" {
  description = "Uploads larger than this many MB (MiB) are validated by the validate job instead of the validate function (MODELRAIL_VALIDATE_IN_JOB_ABOVE_MB)."
  type        = number
  default     = 512

  validation {
    condition     = var.validate_in_job_above_mb > 0
    error_message = "validate_in_job_above_mb must be a positive number of MB."
  }
}

variable "dask_training" {
  description = "Train on a Dask cluster of Compute Engine VMs that the training job creates per run with dask-cloudprovider's GCPCluster (dask.tf): the workers, their machine type and zone (null: <region>-b; it must be in region, where the VMs' subnetwork is). Turn on in terraform/envs/bootstrap first."
  type = object({
    enabled      = optional(bool, false)
    workers      = optional(number, 2)
    machine_type = optional(string, "e2-standard-4")
    zone         = optional(string)
  })
  default = {}

  validation {
    condition     = var.dask_training.workers >= 1 && floor(var.dask_training.workers) == var.dask_training.workers
    error_message = "dask_training.workers must be a whole number from 1."
  }

  validation {
    condition     = var.dask_training.zone == null || can(regex("^[a-z]+-[a-z]+[0-9]+-[a-z]$", coalesce(var.dask_training.zone, "x")))
    error_message = "dask_training.zone must be a zone such as europe-west1-b."
  }
}

variable "staging_service" {
  description = "Cost- and access-relevant settings of the staging services: every model's service (<name_prefix>-staging-<model>) takes the same, each on its own (min_instances warm instances per model)."
  type = object({
    cpu             = optional(string, "1")
    memory          = optional(string, "1Gi")
    concurrency     = optional(number, 16)
    min_instances   = optional(number, 0)
    max_instances   = optional(number, 3)
    ingress         = optional(string, "INGRESS_TRAFFIC_ALL")
    invoker_members = optional(list(string), [])
  })
  default = {}
}

variable "sweep" {
  description = "The sweep job (sweep.tf): how often Cloud Scheduler runs it (cron, UTC), its vCPUs, memory and longest run."
  type = object({
    schedule        = optional(string, "*/10 * * * *")
    cpu             = optional(string, "1")
    memory          = optional(string, "512Mi")
    timeout_seconds = optional(number, 600)
  })
  default = {}

  validation {
    condition     = can(regex("^\\S+( \\S+){4}$", var.sweep.schedule))
    error_message = "sweep.schedule must be a cron expression of five fields, such as */10 * * * *."
  }
}

variable "vertex_model_registry" {
  description = "Provide Vertex AI's Model Registry to the pipeline (vertex.tf): its API, the register and deploy accounts' access, the staging image for its model versions. Turn it on together with [vertex] model_registry in pipeline.toml."
  type        = bool
  default     = false
}

variable "prediction_log_retention_days" {
  description = "Days the staging services' prediction logs (predictions/ in the artifact bucket) are kept before they are deleted; their noncurrent copies then follow the bucket's noncurrent rule."
  type        = number
  default     = 30
  validation {
    condition     = var.prediction_log_retention_days >= 1
    error_message = "prediction_log_retention_days must be at least 1."
  }
}

variable "force_destroy_buckets" {
  description = "Let `terraform destroy` delete the data and artifact buckets with their objects (models included). Keep false outside throwaway projects."
  type        = bool
  default     = false
}

variable "labels" {
  description = "Extra labels for every labelled resource."
  type        = map(string)
  default     = {}
}

variable "manifest_signing" {
  description = "The key version register signs each version's manifest with (the key itself is terraform/envs/bootstrap's). Asymmetric keys do not rotate by themselves: after `gcloud kms keys versions create`, set the new number here; versions signed with older ones still verify while those stay enabled."
  type = object({
    key_version = optional(number, 1)
  })
  default = {}

  validation {
    condition     = var.manifest_signing.key_version >= 1 && floor(var.manifest_signing.key_version) == var.manifest_signing.key_version
    error_message = "manifest_signing.key_version must be a whole number from 1."
  }
}

variable "monitor" {
  description = "The monitor job (monitor.tf): how often Cloud Scheduler runs it (cron, UTC), the window each run judges (the hours up to its start: keep it the schedule's period, so windows neither gap nor overlap), its vCPUs, memory and longest run."
  type = object({
    schedule        = optional(string, "0 * * * *")
    window_hours    = optional(number, 1)
    cpu             = optional(string, "1")
    memory          = optional(string, "1Gi")
    timeout_seconds = optional(number, 1800)
  })
  default = {}

  validation {
    condition     = can(regex("^\\S+( \\S+){4}$", var.monitor.schedule))
    error_message = "monitor.schedule must be a cron expression of five fields, such as 0 * * * *."
  }

  validation {
    condition     = var.monitor.window_hours > 0
    error_message = "monitor.window_hours must be more than 0."
  }
}

variable "batch_job" {
  description = "The batch job (batch.tf), which scores files with a registered version (modelrail predict --cloud): vCPUs, memory, the longest task, task retries, and the parallel tasks of each execution (each scores its share of the input's parts). Memory follows the batch ([limits] batch_mb) and an output piece, not the input."
  type = object({
    cpu             = optional(string, "4")
    memory          = optional(string, "4Gi")
    timeout_seconds = optional(number, 3600)
    max_retries     = optional(number, 1)
    tasks           = optional(number, 4)
  })
  default = {}

  validation {
    condition     = var.batch_job.tasks >= 1 && var.batch_job.tasks <= 100
    error_message = "batch_job.tasks must be between 1 and 100."
  }
}

# ---------------------------------------------------------------- production

variable "production_service" {
  description = "Cost- and access-relevant settings of the production services (production.tf): every model's service (<name_prefix>-production-<model>) takes the same."
  type = object({
    cpu             = optional(string, "1")
    memory          = optional(string, "1Gi")
    concurrency     = optional(number, 16)
    min_instances   = optional(number, 0)
    max_instances   = optional(number, 3)
    ingress         = optional(string, "INGRESS_TRAFFIC_ALL")
    invoker_members = optional(list(string), [])
  })
  default = {}
}

variable "promotion_proposers" {
  description = "Who may propose a version for production (modelrail promote): IAM members such as user:ana@example.com or group:ml-team@example.com."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for member in var.promotion_proposers : can(regex("^(user|group):", member))])
    error_message = "promotion_proposers name people: user:... or group:..., never a service account, allUsers or allAuthenticatedUsers."
  }
}

variable "promotion_approvers" {
  description = "Who may approve a proposal for production (modelrail approve): IAM members such as user:bo@example.com or group:ml-leads@example.com. They hold the approver role (terraform/envs/bootstrap/production.tf); no service account of the pipeline does."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for member in var.promotion_approvers : can(regex("^(user|group):", member))])
    error_message = "promotion_approvers name people: user:... or group:..., never a service account, allUsers or allAuthenticatedUsers."
  }
}
