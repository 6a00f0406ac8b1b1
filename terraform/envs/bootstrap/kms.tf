# The key register signs each version's manifest with (manifest.sig beside it), and the
# staging service verifies it with before it trusts any sha256 the manifest lists: who
# can write the artifact bucket but not sign cannot make a version staging serves.
# Cloud KMS, EC_SIGN_P256_SHA256, used through its REST API (src/modelrail/adapters/google/kms.py).
# Here, not in terraform/envs/dev: whoever administers the key can grant itself the
# signer role, so only the owner does.
resource "google_kms_key_ring" "modelrail" {
  # Key rings cannot be deleted: destroying this removes it from the state only.
  project  = var.project_id
  name     = var.name_prefix
  location = var.region
}

resource "google_kms_crypto_key" "manifest_signing" {
  name     = "${var.name_prefix}-manifest-signing"
  key_ring = google_kms_key_ring.modelrail.id
  purpose  = "ASYMMETRIC_SIGN"
  labels   = { app = "modelrail" }
  # Asymmetric keys take no rotation_period: a new version is made by hand and named in
  # terraform/envs/dev's manifest_signing.key_version (docs/deploy.md).
  version_template {
    algorithm        = "EC_SIGN_P256_SHA256"
    protection_level = var.manifest_signing.protection_level
  }
  # Destroying the key makes every signed version unverifiable: staging would refuse
  # them all.
  lifecycle {
    prevent_destroy = true
  }
}

locals {
  # Grants on this key only, never project-wide. Only register signs; whatever reads a
  # registered version verifies it with the public key first: validate (the champion's
  # profile), evaluate (the champion and its reference set), register (earlier versions'
  # metrics on the card; the signer role cannot read the public key), deploy and the
  # sweep's reconciliation (the version they roll out), and the staging and production
  # services.
  signing_key_grants = [
    { sa = "register", role = "roles/cloudkms.signer" },
    { sa = "validate", role = "roles/cloudkms.publicKeyViewer" },
    { sa = "evaluate", role = "roles/cloudkms.publicKeyViewer" },
    { sa = "register", role = "roles/cloudkms.publicKeyViewer" },
    { sa = "deploy", role = "roles/cloudkms.publicKeyViewer" },
    { sa = "sweep", role = "roles/cloudkms.publicKeyViewer" },
    { sa = "staging", role = "roles/cloudkms.publicKeyViewer" },
    { sa = "production", role = "roles/cloudkms.publicKeyViewer" },
    # The monitor: the version whose training profile it judges the log against.
    { sa = "monitor", role = "roles/cloudkms.publicKeyViewer" },
    # Batch prediction verifies the version it scores as the staging service does.
    { sa = "batch", role = "roles/cloudkms.publicKeyViewer" },
  ]
}

resource "google_kms_crypto_key_iam_member" "manifest_signing" {
  for_each = { for grant in local.signing_key_grants : "${grant.sa}/${grant.role}" => grant }

  crypto_key_id = google_kms_crypto_key.manifest_signing.id
  role          = each.value.role
  member        = "serviceAccount:${google_service_account.stage[each.value.sa].email}"
}
