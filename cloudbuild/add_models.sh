#!/usr/bin/env bash
# Cloud Build, cloudbuild/deploy.yaml step add-models, as the deployer, after terraform
# apply: installs every model definition the commit holds in the artifact bucket with
# `modelrail add` (models/<model>/definition.json, which the functions and jobs read).
# An unchanged definition is left as it is, so re-running a build changes nothing.
#
# Each definition's model must have a staging service (`models` in terraform.tfvars,
# the environment's staging_services output): a model without one would train and then
# fail every deploy, so the build stops first, naming it, and adds nothing.
#
# Reads, from the step's environment (a substitution reaches a script only that way):
#   MODEL_DEFINITIONS   the pipeline.toml files, as paths or globs (_MODEL_DEFINITIONS)
#   TF_ENV              the environment just applied (_TF_ENV)
#   MODELRAIL_MODE=cloud, GOOGLE_CLOUD_PROJECT, MODELRAIL_ARTIFACT_BUCKET: for modelrail
set -euo pipefail

fail() {
  echo "add-models: $*" >&2
  exit 1
}

[ "${MODELRAIL_MODE:-}" = cloud ] || fail "MODELRAIL_MODE must be cloud, not '${MODELRAIL_MODE:-}'"
[ -n "${GOOGLE_CLOUD_PROJECT:-}" ] || fail "GOOGLE_CLOUD_PROJECT is not set"
[ -n "${MODELRAIL_ARTIFACT_BUCKET:-}" ] \
  || fail "MODELRAIL_ARTIFACT_BUCKET is not set (the trigger's _ARTIFACT_BUCKET, which terraform/envs/dev sets)"
[[ "${TF_ENV:-}" =~ ^[a-z0-9_-]+$ ]] || fail "TF_ENV='${TF_ENV:-}' is not an environment under terraform/envs"

# modelrail with what it needs against the cloud (the apply step's `make stage` made the
# environment already: this only completes it).
make --no-print-directory install-run
python=.venv/bin/python

# The patterns are globs on purpose (pipeline.toml models/*/pipeline.toml); one that
# matches no file adds nothing.
shopt -s nullglob
# shellcheck disable=SC2206
matched=(${MODEL_DEFINITIONS:-})
shopt -u nullglob
definitions=()
for path in "${matched[@]}"; do
  if [ -f "$path" ]; then definitions+=("$path"); fi
done
[ "${#definitions[@]}" -gt 0 ] || fail "no model definition matches '${MODEL_DEFINITIONS:-}'"

# The models with a staging service, as the state this build just applied has them.
served=$(terraform -chdir="terraform/envs/$TF_ENV" output -json staging_services \
  | "$python" -c 'import json, sys; print("\n".join(json.load(sys.stdin)))')

for definition in "${definitions[@]}"; do
  model=$("$python" -c \
    'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["model"]["name"])' \
    "$definition")
  grep -qxF -- "$model" <<<"$served" \
    || fail "$definition defines model '$model', which has no staging service: add it to models in terraform/envs/$TF_ENV/terraform.tfvars and copy that up (docs/deploy.md, 'More than one model')"
done

for definition in "${definitions[@]}"; do
  .venv/bin/modelrail add "$definition"
done
