output "service_accounts" {
  description = "Stage => service account email (terraform/envs/dev looks them up by name)."
  value       = { for stage, account in google_service_account.stage : stage => account.email }
  depends_on  = [time_sleep.iam_propagation]
}

output "manifest_signing_key" {
  description = "The manifest signing key (terraform/envs/dev names its version in MODELRAIL_SIGNING_KEY)."
  value       = google_kms_crypto_key.manifest_signing.id
  depends_on  = [time_sleep.iam_propagation]
}

output "dask_service_account" {
  description = "The Dask VMs' service account (dask.tf); null while dask_training is off. terraform/envs/dev looks it up by name."
  value       = local.dask ? google_service_account.dask[0].email : null
  depends_on  = [time_sleep.iam_propagation]
}
