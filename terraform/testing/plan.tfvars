# Inputs of the offline `terraform plan` in tests/infra/test_infra_plan.py (stand-in
# provider, nothing is created). GitHub is set so the plan includes the build triggers.
project_id                     = "modelrail-plan-test"
region                         = "europe-west1"
tf_state_bucket                = "modelrail-plan-test-tfstate"
deployer_service_account_email = "modelrail-deployer@modelrail-plan-test.iam.gserviceaccount.com"
github_owner                   = "modelrail-org"
github_repository              = "modelrail"
code_version                   = "0123456789abcdef0123456789abcdef01234567"
vertex_model_registry          = true # so the plan holds vertex.tf's resources too
# Two models, so the plan holds what exists once per model twice.
models = ["penguins", "diamonds"]

staging_service = {
  invoker_members = ["user:developer@example.com", "group:ml-team@example.com"]
}
