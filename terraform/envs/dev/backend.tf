# State lives in a GCS bucket made once by hand (docs/deploy.md, step 2). Its name is
# given at init: terraform init -backend-config="bucket=..." -backend-config="prefix=modelrail/dev"
terraform {
  backend "gcs" {}
}
