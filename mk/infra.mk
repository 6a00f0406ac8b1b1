# Infrastructure: `make stage` (Cloud Functions source folders), the offline checks'
# tools, and Terraform helpers. Included by the top-level Makefile.

TOOLS_DIR := build/tools
# checkov lives in its own environment: its bc-python-hcl2 clashes with the
# python-hcl2 the structural tests use in .venv.
CHECKOV_VENV := $(TOOLS_DIR)/checkov-venv
CHECKOV_VERSION := 3.3.30
CHECKOV_CONSTRAINTS := terraform/policies/checkov-constraints.txt
CHECKOV := $(CHECKOV_VENV)/bin/checkov
TERRAFORM ?= terraform
TF_ENV ?= dev

TEST_PREREQS += $(CHECKOV)

$(CHECKOV): $(CHECKOV_CONSTRAINTS)
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -c $(CHECKOV_CONSTRAINTS) checkov==$(CHECKOV_VERSION)
	touch $@

.PHONY: tools
tools: $(STAMP) $(CHECKOV) ## Install the infrastructure checks' tools (checkov in its own environment)

.PHONY: stage
stage: $(STAMP) ## Build build/functions/<stage>/ (the Cloud Functions source folders)
	$(BIN)/python scripts/stage_functions.py --out build/functions

.PHONY: infra-check
infra-check: $(STAMP) $(CHECKOV) ## Run only the offline checks of terraform/, cloudbuild/ and the Dockerfiles
	$(BIN)/pytest -m infra tests/infra $(PYTEST_ARGS)

.PHONY: tf-fmt
tf-fmt: ## Format the Terraform code
	$(TERRAFORM) fmt -recursive terraform

.PHONY: tf-init
tf-init: ## terraform init for terraform/envs/$(TF_ENV) (needs TF_STATE_BUCKET)
	@test -n "$(TF_STATE_BUCKET)" || { echo "set TF_STATE_BUCKET to the Terraform state bucket"; exit 1; }
	$(TERRAFORM) -chdir=terraform/envs/$(TF_ENV) init -input=false \
		-backend-config="bucket=$(TF_STATE_BUCKET)" -backend-config="prefix=modelrail/$(TF_ENV)"

.PHONY: tf-plan
tf-plan: stage ## terraform plan for terraform/envs/$(TF_ENV) (after tf-init)
	$(TERRAFORM) -chdir=terraform/envs/$(TF_ENV) plan -input=false -out=tfplan

.PHONY: tf-apply
tf-apply: stage ## terraform apply for terraform/envs/$(TF_ENV) (after tf-init)
	$(TERRAFORM) -chdir=terraform/envs/$(TF_ENV) apply -input=false -auto-approve

# The provider schemas the offline validate/plan serves (tests/infra/standin), rebuilt
# from the providers' CDK bindings on PyPI: a 49 MB download for google. Run it after
# changing a version in scripts/provider_schema.py (see docs/deploy.md).
.PHONY: provider-schema
provider-schema: $(STAMP) ## Rebuild terraform/testing/*.schema.json.gz from the providers' CDK bindings
	$(BIN)/python scripts/provider_schema.py

# The images and the Cloud Build steps run one Python patch release, named by exact tag
# (a digest cannot be looked up offline). Docker's official python images are rebuilt
# under the same tag for Debian's point releases; a new Python patch release needs a new
# tag: `make python-version PYTHON_PATCH=3.11.N`, then `make test` (docs/deploy.md).
.PHONY: python-version
python-version: ## Move the Dockerfiles and Cloud Build to Python $(PYTHON_PATCH)
	@echo "$(PYTHON_PATCH)" | grep -qxE '3\.11\.[0-9]+' \
		|| { echo "set PYTHON_PATCH to a 3.11 patch release, e.g. PYTHON_PATCH=3.11.18"; exit 1; }
	sed -i -E 's/^(FROM[[:space:]]+python:)3\.11\.[0-9]+-/\1$(PYTHON_PATCH)-/' services/*/Dockerfile
	sed -i -E 's/^(  _PYTHON_VERSION: ).*/\1$(PYTHON_PATCH)/' cloudbuild/*.yaml
