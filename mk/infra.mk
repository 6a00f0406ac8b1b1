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

# Values that reach a shell (from the command line, or Cloud Build's substitutions via
# `make ... TF_ENV=${_TF_ENV}`) are checked against an allow-list of characters by make
# itself, before any recipe line runs, and are quoted where they are used: a value such
# as `dev; echo INJECTED` or `$(shell ...)` stops make with an error instead of running.
# $(value NAME) reads the text as given, so a make function inside it is never expanded.
ENV_NAME_CHARS := a b c d e f g h i j k l m n o p q r s t u v w x y z 0 1 2 3 4 5 6 7 8 9 - _
BUCKET_NAME_CHARS := $(ENV_NAME_CHARS) .
VERSION_CHARS := 0 1 2 3 4 5 6 7 8 9 .
# $(call without,TEXT,CHARS): TEXT with every one of CHARS removed.
without = $(if $(2),$(call without,$(subst $(firstword $(2)),,$(1)),$(wordlist 2,$(words $(2)),$(2))),$(1))
# $(call checked,NAME,CHARS,HINT): NAME's value if it is non-empty and made of CHARS only.
checked = $(if $(and $(value $(1)),$(if $(call without,$(value $(1)),$(2)),,ok)),$(value $(1)),$(error $(1)="$(value $(1))": $(3) (only the characters $(subst $() ,,$(2)))))
tf_env = $(call checked,TF_ENV,$(ENV_NAME_CHARS),set TF_ENV to an environment under terraform/envs)
tf_state_bucket = $(call checked,TF_STATE_BUCKET,$(BUCKET_NAME_CHARS),set TF_STATE_BUCKET to the Terraform state bucket)
python_patch = $(call checked,PYTHON_PATCH,$(VERSION_CHARS),set PYTHON_PATCH to a 3.11 patch release such as 3.11.18)
# Checked while the makefiles are read, so a refused value stops make before any recipe
# (`make stage` of tf-apply included) runs.
ifneq ($(filter tf-init tf-plan tf-apply,$(MAKECMDGOALS)),)
$(if $(tf_env),)
endif
ifneq ($(filter tf-init,$(MAKECMDGOALS)),)
$(if $(tf_state_bucket),)
endif
ifneq ($(filter python-version,$(MAKECMDGOALS)),)
$(if $(python_patch),)
endif

TEST_PREREQS += $(CHECKOV)

# The directory the environment was made in: a virtual environment's scripts name its
# interpreter by absolute path, so one copied or moved with its checkout runs nothing.
# Made again when the recorded directory is not this one.
CHECKOV_MADE_IN := $(CHECKOV_VENV)/.made-in
ifneq ($(shell cat $(CHECKOV_MADE_IN) 2>/dev/null),$(abspath $(CHECKOV_VENV)))
.PHONY: $(CHECKOV)
endif

$(CHECKOV): $(CHECKOV_CONSTRAINTS)
	rm -rf $(CHECKOV_VENV)
	$(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -c $(CHECKOV_CONSTRAINTS) checkov==$(CHECKOV_VERSION)
	echo '$(abspath $(CHECKOV_VENV))' > $(CHECKOV_MADE_IN)
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
	$(TERRAFORM) -chdir='terraform/envs/$(tf_env)' init -input=false \
		-backend-config='bucket=$(tf_state_bucket)' -backend-config='prefix=modelrail/$(tf_env)'

.PHONY: tf-plan
tf-plan: stage ## terraform plan for terraform/envs/$(TF_ENV) (after tf-init)
	$(TERRAFORM) -chdir='terraform/envs/$(tf_env)' plan -input=false -out=tfplan

.PHONY: tf-apply
tf-apply: stage ## terraform apply for terraform/envs/$(TF_ENV) (after tf-init)
	$(TERRAFORM) -chdir='terraform/envs/$(tf_env)' apply -input=false -auto-approve

# The provider schemas the offline validate/plan serves (tests/infra/standin), rebuilt
# from the providers' CDK bindings on PyPI: a 49 MB download for google. Run it after
# changing a version in scripts/provider_schema.py (see docs/deploy.md).
.PHONY: provider-schema
provider-schema: $(STAMP) ## Rebuild terraform/testing/*.schema.json.gz from the providers' CDK bindings
	$(BIN)/python scripts/provider_schema.py

# The images and the Cloud Build steps run one Python patch release, named by exact tag.
# A new Python patch release needs a new tag: `make python-version PYTHON_PATCH=3.11.N`
# drops the old tag's digests, then `make image-digests` and `make test` (docs/deploy.md).
.PHONY: python-version
python-version: ## Move the Dockerfiles and Cloud Build to Python $(PYTHON_PATCH)
	@echo '$(python_patch)' | grep -qxE '3\.11\.[0-9]+' \
		|| { echo "set PYTHON_PATCH to a 3.11 patch release, e.g. PYTHON_PATCH=3.11.18"; exit 1; }
	sed -i -E 's/^(FROM[[:space:]]+python:)3\.11\.[0-9]+-([a-z-]+)(@sha256:[0-9a-f]+)?/\1$(python_patch)-\2/' services/*/Dockerfile
	sed -i -E 's/^(  _PYTHON_VERSION: ).*/\1$(python_patch)/' cloudbuild/*.yaml
	sed -i -E 's/^([ -]*name: python:\$$\{_PYTHON_VERSION\}-[a-z-]+)@sha256:[0-9a-f]+/\1/' cloudbuild/*.yaml

# The images install only hash-pinned requirements (pip --require-hashes): each
# requirements.lock is compiled from its requirements.txt and constraints.txt with the
# hashes of the files PyPI publishes, resolved for Linux x86_64: the images' Debian
# bookworm, and the Cloud Functions' python311 runtime (Ubuntu 22.04, glibc 2.35), whose
# buildpack installs functions/requirements.lock (`make stage` copies it into every
# function as requirements.txt). Needs PyPI; run after changing a requirements.txt or
# constraints.txt (a test fails while a lock names other versions than its sources).
IMAGE_LOCKS := services/staging/requirements services/staging/build-requirements \
	services/train-job/requirements
FUNCTION_LOCK := functions/requirements
# $(call lock,NAME,PLATFORM): NAME.lock from NAME.txt and constraints.txt, with hashes.
lock = $(BIN)/uv pip compile --quiet --generate-hashes --python-version 3.11 \
	--python-platform $(2) --only-binary :all: --custom-compile-command 'make image-requirements' \
	-c constraints.txt $(1).txt -o $(1).lock
.PHONY: image-requirements
image-requirements: $(STAMP) ## Compile the hash-pinned requirements.lock files of the images and the functions (needs PyPI)
	$(foreach name,$(IMAGE_LOCKS),$(call lock,$(name),x86_64-manylinux_2_28) &&) true
	$(call lock,$(FUNCTION_LOCK),x86_64-manylinux_2_35)

# Every image the builds pull, pinned by the digest its registry serves for its tag now
# (scripts/image_digests.py). Needs the registries; run it to take rebuilt tags or after
# a version changes. tests/infra fails on an image without a digest.
.PHONY: image-digests
image-digests: $(STAMP) ## Pin every Dockerfile FROM and Cloud Build step image by digest (needs the registries)
	$(BIN)/python scripts/image_digests.py
