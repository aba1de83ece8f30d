# mlops-operator — the stable interface for people and scripts. `make help` lists the targets.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
CLUSTER ?= local
NODE ?= kwok
LOCAL := tests/cluster/local
PYTEST_ARGS ?=

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-z][a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

# --- Python environment ------------------------------------------------------------------
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	@echo "==> Installing mlops-operator and its test tools into $(VENV)"
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,s3]'
	@touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Create the virtualenv with the package and test tools

# --- Checks --------------------------------------------------------------------------------
.PHONY: lint
lint: venv ## ruff, mypy, import layering, and a check that crds/ matches the API models
	$(BIN)/ruff check operator images tests
	$(BIN)/ruff format --check operator images tests
	$(BIN)/mypy operator/mlops_operator $(wildcard images/*/mlops_*)
	$(BIN)/lint-imports
	$(BIN)/python -m mlops_operator.api.crdgen --check

.PHONY: crds
crds: venv ## Regenerate crds/ from the API models
	$(BIN)/python -m mlops_operator.api.crdgen --out crds

.PHONY: unit
unit: venv ## Unit tier: pure functions, trainer and server in-process
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

.PHONY: integration
integration: venv cluster-up ## Cluster tier: the operator in-process against the local cluster's API server
	MLOPS_KUBECTL=$$($(LOCAL)/build.sh | tail -n 1)/kubectl $(BIN)/pytest tests/cluster -q -m cluster $(PYTEST_ARGS)

.PHONY: test
test: lint unit integration ## The README's test command: lint + unit + cluster tiers, installing what they need

# --- Local cluster from real components ---------------------------------------------------
.PHONY: cluster-up
cluster-up: ## Start the local cluster (simulated kwok nodes; NODE=real for a real node)
	NODE=$(NODE) $(LOCAL)/up.sh

.PHONY: cluster-down
cluster-down: ## Stop every process of the local cluster and remove its state
	$(LOCAL)/down.sh

.PHONY: kubeconfig
kubeconfig: ## Print the local cluster's kubeconfig path
	@$(LOCAL)/kubeconfig.sh

# --- Operator --------------------------------------------------------------------------------
.PHONY: run
run: venv ## Run the operator out-of-cluster against the local cluster
	KUBECONFIG=$$($(LOCAL)/kubeconfig.sh) $(BIN)/mlops-operator --all-namespaces

.PHONY: clean
clean: ## Remove the virtualenv and caches inside the checkout
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# --- Benchmarks (issue #10): they report, they never assert speed -----------------------------
SERVING_ARGS ?=
OPERATOR_ARGS ?=
.PHONY: bench
bench: bench-serving bench-operator ## Both benchmarks (~20 min; results in tests/benchmarks/results/)

.PHONY: bench-serving
bench-serving: venv ## Ours vs MLServer vs KServe on one core each, with wrk (~12 min; needs wrk, taskset)
	$(BIN)/python tests/benchmarks/serving.py $(SERVING_ARGS)

.PHONY: bench-operator
bench-operator: venv cluster-up ## 1,000 TrainingJobs against the local cluster's kwok nodes (~8 min)
	$(BIN)/python tests/benchmarks/operator_scale.py $(OPERATOR_ARGS)

# --- Images ----------------------------------------------------------------------------------
IMAGE_TAG ?= dev
LOCAL_BASE ?=
.PHONY: images
images: ## Build mlops-operator/{operator,trainer,server}:$(IMAGE_TAG) (LOCAL_BASE=1: a debootstrap base, no registry)
	IMAGE_TAG=$(IMAGE_TAG) PYTHON=$(PYTHON) images/build.sh $(if $(LOCAL_BASE),--local-base)
