# Vertex AI's Model Registry, for pipeline.toml's [vertex] model_registry: nothing here
# exists unless var.vertex_model_registry is true. Then the register stage uploads every
# version as a version of the Vertex AI model named like the model (its files in the
# artifact bucket, served by the staging image) and moves the champion alias; the deploy
# stage moves the staging alias. Turn both switches on together (docs/deploy.md).
locals {
  vertex_grants = [
    # Vertex AI models have no IAM policy of their own, so these are project-level.
    # roles/aiplatform.user is the narrowest predefined role with models.upload,
    # models.get/list, models.update (mergeVersionAliases) and operations.get.
    { sa = "register", role = "roles/aiplatform.user" },
    { sa = "deploy", role = "roles/aiplatform.user" },
  ]

  # What the stage functions read (Settings.from_env): the image Vertex AI model versions
  # serve with. Its presence says the deployment provides Vertex AI.
  vertex_env = var.vertex_model_registry ? {
    MODELRAIL_STAGING_IMAGE = "${module.docker_repository.url}/staging:${var.code_version}"
  } : {}
}

module "vertex_api" {
  source     = "../../modules/apis"
  count      = var.vertex_model_registry ? 1 : 0
  project_id = var.project_id
  services   = ["aiplatform.googleapis.com"]
}

resource "google_project_iam_member" "vertex" {
  for_each = { for grant in local.vertex_grants : "${grant.sa}/${grant.role}" => grant if var.vertex_model_registry }

  project = var.project_id
  role    = each.value.role
  member  = "serviceAccount:${data.google_service_account.stage[each.value.sa].email}"

  depends_on = [module.vertex_api]
}

# Google creates Vertex AI's service agent lazily, at the API's first use: a grant to it
# before then fails (the account does not exist). Created here first, and the grant
# names the member this returns, so it always comes after.
resource "google_project_service_identity" "vertex_agent" {
  provider = google-beta
  count    = var.vertex_model_registry ? 1 : 0

  project    = var.project_id
  service    = "aiplatform.googleapis.com"
  depends_on = [module.vertex_api]
}

# An upload copies the version's folder (artifactUri) with Vertex AI's service agent.
resource "google_storage_bucket_iam_member" "vertex_agent_reads_artifacts" {
  count = var.vertex_model_registry ? 1 : 0

  bucket = local.buckets.artifacts
  role   = "roles/storage.objectViewer"
  member = google_project_service_identity.vertex_agent[0].member

  depends_on = [module.buckets]
}
