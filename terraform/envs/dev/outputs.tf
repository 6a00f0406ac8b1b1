output "data_bucket" {
  description = "Upload CSVs here, under the model's folder (gcloud storage cp data.csv gs://BUCKET/uploads/MODEL/...): each upload starts a run of that model."
  value       = module.buckets["data"].name
}

output "artifact_bucket" {
  description = "The registry and the run history."
  value       = module.buckets["artifacts"].name
}

output "staging_urls" {
  description = "Model => its staging service's URL (IAM-authenticated: send an identity token)."
  value       = { for model, service in module.staging_service : model => service.uri }
}

output "staging_services" {
  description = "Model => its staging Cloud Run service's name (<name_prefix>-staging-<model>)."
  value       = { for model, service in module.staging_service : model => service.name }
}

output "training_job" {
  description = "The training Cloud Run job name."
  value       = module.training_job.name
}

output "functions" {
  description = "Stage => Cloud Function name."
  value       = { for stage, function in module.functions : stage => function.name }
}

output "topics" {
  description = "The Pub/Sub topics (named as in topology.yaml)."
  value       = module.pubsub.topic_names
}

output "subscriptions" {
  description = "The Pub/Sub subscriptions (named as in topology.yaml)."
  value       = module.pubsub.subscription_names
}

output "image_repository" {
  description = "Push images here: REGION-docker.pkg.dev/PROJECT/REPOSITORY."
  value       = module.docker_repository.url
}

output "service_accounts" {
  description = "Stage => service account email."
  value       = { for stage, account in data.google_service_account.stage : stage => account.email }
}

output "build_triggers" {
  description = "Cloud Build trigger name => id (empty without a connected GitHub repository)."
  value       = length(module.cloudbuild_triggers) > 0 ? module.cloudbuild_triggers[0].trigger_ids : {}
}

output "sweep_job" {
  description = "The Cloud Run job Cloud Scheduler runs to sweep (sweep.tf)."
  value       = module.sweep_job.name
}

output "validate_job" {
  description = "The Cloud Run job that validates uploads too large for the validate function (validate_job.tf)."
  value       = module.validate_job.name
}

output "dask_training" {
  description = "Where the training job starts its Dask clusters (dask.tf): the MODELRAIL_DASK_* environment it is given; empty while dask_training is off."
  value       = local.dask_env
}

output "monitor_job" {
  description = "The Cloud Run job Cloud Scheduler runs to monitor every model's prediction log (monitor.tf)."
  value       = module.monitor_job.name
}

output "batch_job" {
  description = "The Cloud Run job that scores batch predictions (batch.tf; modelrail predict --cloud)."
  value       = module.batch_job.name
}

output "production_urls" {
  description = "Model => its production service's URL (IAM-authenticated: send an identity token)."
  value       = { for model, service in module.production_service : model => service.uri }
}

output "production_services" {
  description = "Model => its production Cloud Run service's name (<name_prefix>-production-<model>)."
  value       = { for model, service in module.production_service : model => service.name }
}
