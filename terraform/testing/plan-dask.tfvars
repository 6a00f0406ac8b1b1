# With plan.tfvars, the offline plans of tests/infra/test_infra_dask.py with the Dask
# cluster switch on: terraform/envs/bootstrap (the owner's half) and terraform/envs/dev.
dask_training = {
  enabled = true
}
