# The key register signs each version's manifest with, and the staging service verifies
# it with (terraform/envs/bootstrap/kms.tf). The owner creates it and grants it there:
# whoever administers the key can grant itself the signer role, so the deployer, which
# applies this configuration, only reads it (roles/cloudkms.viewer).
data "google_kms_key_ring" "modelrail" {
  project  = var.project_id
  name     = var.name_prefix
  location = var.region
}

data "google_kms_crypto_key" "manifest_signing" {
  name     = "${var.name_prefix}-manifest-signing"
  key_ring = data.google_kms_key_ring.modelrail.id
}

locals {
  # The key version that signs; the stages, the training job and the staging service
  # read it (MODELRAIL_SIGNING_KEY), and the deploy stage sets it on every revision.
  manifest_signing_key = "${data.google_kms_crypto_key.manifest_signing.id}/cryptoKeyVersions/${var.manifest_signing.key_version}"
}

# Deployments made before terraform/envs/bootstrap held the key in this configuration's
# state. Forgotten here, not destroyed (it signs every registered version): the owner
# adopts it in the bootstrap root with `terraform import` (docs/deploy.md, "Upgrading a
# deployment made before the bootstrap root").
removed {
  from = google_kms_key_ring.modelrail
  lifecycle {
    destroy = false
  }
}

removed {
  from = google_kms_crypto_key.manifest_signing
  lifecycle {
    destroy = false
  }
}

removed {
  from = google_kms_crypto_key_iam_member.manifest_signing
  lifecycle {
    destroy = false
  }
}
