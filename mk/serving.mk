# The staging service's protocol tests drive it with MLflow's and KServe's own clients,
# installed in their own environment (their pins clash with the project's). Included
# by the top-level Makefile; `make test` builds it first.

CLIENTS_VENV := build/protocol-clients-venv
CLIENTS_REQUIREMENTS := tests/serving/requirements-clients.txt
CLIENTS_PYTHON := $(CLIENTS_VENV)/bin/python

TEST_PREREQS += $(CLIENTS_PYTHON)

# Made again when the recorded directory is not this one (see CHECKOV_MADE_IN).
CLIENTS_MADE_IN := $(CLIENTS_VENV)/.made-in
ifneq ($(shell cat $(CLIENTS_MADE_IN) 2>/dev/null),$(abspath $(CLIENTS_VENV)))
.PHONY: $(CLIENTS_PYTHON)
endif

$(CLIENTS_PYTHON): $(CLIENTS_REQUIREMENTS)
	rm -rf $(CLIENTS_VENV)
	$(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/python -m pip install --quiet -r $(CLIENTS_REQUIREMENTS)
	echo '$(abspath $(CLIENTS_VENV))' > $(CLIENTS_MADE_IN)
	touch $@

.PHONY: protocol-clients
protocol-clients: $(CLIENTS_PYTHON) ## Install MLflow's and KServe's clients for the service's protocol tests
