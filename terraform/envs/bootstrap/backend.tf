# The same state bucket as the environments (docs/deploy.md, step 2), its own prefix:
# terraform init -backend-config="bucket=..." -backend-config="prefix=modelrail/composition/bootstrap"
terraform {
  backend "gcs" {}
}
