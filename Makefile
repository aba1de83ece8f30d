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
	$(BIN)/mypy operator/mlops_contract operator/mlops_operator $(wildcard images/*/mlops_*)
	$(BIN)/lint-imports
	$(BIN)/python -m mlops_contract.api.crdgen --check
	$(BIN)/python tests/monitoring/promtool.py

.PHONY: crds
crds: venv ## Regenerate crds/ from the API models
	$(BIN)/python -m mlops_contract.api.crdgen --out crds

.PHONY: protos
protos: venv ## Regenerate the server's gRPC messages from images/server/mlops_server/proto/inference.proto
	cd images/server && $(abspath $(BIN))/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. \
		mlops_server/proto/inference.proto

.PHONY: kserve-venv
kserve-venv: venv ## KServe's own virtualenv (its clients run against our server in the unit tier; the serving benchmark runs its server)
	cd tests/benchmarks && $(abspath $(BIN))/python -c 'import serving; serving.competitor_venvs(["kserve"])'

.PHONY: unit
unit: venv kserve-venv ## Unit tier: pure functions, trainer and server in-process
	$(BIN)/pytest tests/unit -q $(PYTEST_ARGS)

.PHONY: integration
integration: venv ## Cluster tier: the operator in-process against the local cluster's API server (kwok nodes)
	MLOPS_CLUSTER_SWITCH=1 NODE=kwok $(LOCAL)/up.sh
	MLOPS_KUBECTL=$$($(LOCAL)/build.sh | tail -n 1)/kubectl $(BIN)/pytest tests/cluster -q -m cluster $(PYTEST_ARGS)

E2E_ARGS ?=
# Where the e2e tier and the demo keep artifacts, data, models and the prediction log (issue #17):
# pvc (a claim; the e2e loop also runs once on S3) or s3 (the cluster's S3 server, no claim at all).
# kind defaults to s3: its pods run on two nodes, where no claim follows them.
STORAGE ?= $(if $(filter kind,$(CLUSTER)),s3,pvc)
.PHONY: e2e
e2e: venv deploy ## End-to-end tier: the operator deployed from manifests/, real pods (CLUSTER=local|kind, STORAGE=pvc|s3)
ifneq ($(CLUSTER),kind)
	$(LOCAL)/prometheus.sh start
endif
	MLOPS_KUBECTL=$(KUBECTL) MLOPS_E2E_KUBECONFIG=$(KUBECONFIG_FILE) MLOPS_E2E_OVERLAY=manifests/overlays/$(CLUSTER) \
	  MLOPS_E2E_STORAGE=$(STORAGE) \
	  $(if $(filter kind,$(CLUSTER)),,MLOPS_E2E_PROMETHEUS_URL=$$($(LOCAL)/prometheus.sh url)) \
	  $(BIN)/pytest tests/e2e -q -m e2e $(E2E_ARGS)

.PHONY: test
test: lint unit integration e2e ## The README's test command: every tier, installing what they need

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

.PHONY: bench-training
bench-training: venv deploy ## A tuned TrainingJob on the real node vs GridSearchCV(n_jobs=2) in one process, 100k rows (TRAINING_ARGS="--rows 100000 --rows 1000000")
	MLOPS_KUBECTL=$(KUBECTL) MLOPS_BENCH_KUBECONFIG=$(KUBECONFIG_FILE) $(BIN)/python tests/benchmarks/training.py $(TRAINING_ARGS)

.PHONY: bench-operator
bench-operator: venv cluster-up ## 1,000 TrainingJobs against the local cluster's kwok nodes (~8 min)
	$(BIN)/python tests/benchmarks/operator_scale.py $(OPERATOR_ARGS)

# --- Images ----------------------------------------------------------------------------------
IMAGE_TAG ?= dev
# The local cluster lives where no registry is reachable: its images start FROM a debootstrap base.
# So does kind's unless KIND_PULL=1 says registries are reachable (tests/cluster/kind/up.sh).
KIND_PULL ?= 0
LOCAL_BASE ?= $(if $(filter local,$(CLUSTER)),1,$(if $(filter 1,$(KIND_PULL)),,1))
CACHE_DIR := $(or $(MLOPS_CACHE),$(HOME)/.cache/mlops-operator)
IMAGE_ARCHIVE := $(CACHE_DIR)/images/mlops-operator-$(IMAGE_TAG).tar
.PHONY: images
images: ## Build mlops-operator/{operator,trainer,server}:$(IMAGE_TAG) (LOCAL_BASE=1: a debootstrap base, no registry)
	IMAGE_TAG=$(IMAGE_TAG) PYTHON=$(PYTHON) images/build.sh $(if $(LOCAL_BASE),--local-base)

# --- Deploying into a cluster: CLUSTER=local (this repo's cluster, NODE=real) or CLUSTER=kind ---
KIND_VERSION ?= v0.30.0
KIND_NODE_IMAGE ?= kindest/node:v1.34.0
KIND_CLUSTER ?= mlops
KIND := $(CACHE_DIR)/bin/kind-$(KIND_VERSION)
KIND_ENV = KIND=$(KIND) KIND_CLUSTER=$(KIND_CLUSTER) KUBECONFIG_FILE=$(CACHE_DIR)/kind-$(KIND_CLUSTER).kubeconfig
ifeq ($(CLUSTER),kind)
# The cluster's own kubectl version (hosts often have none).
KUBECTL = $$($(LOCAL)/build.sh | tail -n 1)/kubectl
KUBECONFIG_FILE := $(CACHE_DIR)/kind-$(KIND_CLUSTER).kubeconfig
else
KUBECTL = $$($(LOCAL)/build.sh | tail -n 1)/kubectl
KUBECONFIG_FILE = $$($(LOCAL)/kubeconfig.sh)
endif

.PHONY: deploy
deploy: images ## Build the images, put them into the cluster (CLUSTER=local|kind) and apply manifests/overlays/$(CLUSTER)
ifeq ($(CLUSTER),kind)
	$(MAKE) kind-load
else
	MLOPS_CLUSTER_SWITCH=1 NODE=real $(LOCAL)/up.sh
	$(LOCAL)/load-images.sh $(IMAGE_ARCHIVE)
endif
	$(KUBECTL) --kubeconfig $(KUBECONFIG_FILE) apply --server-side -k manifests/overlays/$(CLUSTER)
	$(KUBECTL) --kubeconfig $(KUBECONFIG_FILE) wait --for=condition=Established crd -l app.kubernetes.io/part-of=mlops-operator
	$(KUBECTL) --kubeconfig $(KUBECONFIG_FILE) -n mlops-system rollout restart deployment/mlops-operator
	$(KUBECTL) --kubeconfig $(KUBECONFIG_FILE) -n mlops-system rollout status deployment/mlops-operator --timeout=300s

# --- The demo: the whole lifecycle, narrated (tests/e2e/demo.py, the e2e loop's own code) ------
DEMO_NS ?= mlops-demo
# Taken when make parses this file, before the prerequisites run, so the demo reports the total.
DEMO_STARTED := $(shell date +%s)
.PHONY: demo
demo: venv $(if $(filter kind,$(CLUSTER)),kind-up) deploy ## Cluster up, images, deploy, then train → serve → drift → retrain → roll out, narrated (CLUSTER=local|kind, STORAGE=pvc|s3)
	$(BIN)/python tests/e2e/demo.py run --kubeconfig $(KUBECONFIG_FILE) --kubectl $(KUBECTL) \
	  --cluster $(CLUSTER) --namespace $(DEMO_NS) --storage $(STORAGE) --deploy-started $(DEMO_STARTED)

.PHONY: demo-down
demo-down: venv ## Delete the demo namespace, then stop the cluster (CLUSTER=local|kind)
	-$(BIN)/python tests/e2e/demo.py down --kubeconfig $(KUBECONFIG_FILE) --kubectl $(KUBECTL) --namespace $(DEMO_NS) --storage $(STORAGE)
ifeq ($(CLUSTER),kind)
	$(MAKE) kind-down
else
	$(LOCAL)/down.sh
endif

$(KIND):
	@mkdir -p $(dir $(KIND))
	GOBIN=/tmp/kind-$(KIND_VERSION) go install sigs.k8s.io/kind@$(KIND_VERSION) && mv /tmp/kind-$(KIND_VERSION)/kind $(KIND)

.PHONY: kind-image
kind-image: ## Build the kind node image mlops-operator/kind-node offline (cached; rebuilt when its inputs change)
	tests/cluster/kind/node-image.sh

.PHONY: kind-up
kind-up: $(KIND) ## Create the kind cluster (1 control plane + 2 workers; the local node image unless KIND_PULL=1)
	$(KIND_ENV) KIND_NODE_IMAGE=$(KIND_NODE_IMAGE) KIND_PULL=$(KIND_PULL) tests/cluster/kind/up.sh
	@echo "kubeconfig: $(CACHE_DIR)/kind-$(KIND_CLUSTER).kubeconfig"

.PHONY: kind-load
kind-load: $(KIND) ## Load the images into the kind cluster (kind load image-archive)
	DOCKER_HOST=unix:///run/mlops-kind/docker.sock $(KIND) load image-archive $(IMAGE_ARCHIVE) --name $(KIND_CLUSTER)

.PHONY: kind-down
kind-down: ## Delete the kind cluster and stop its Docker daemon
	$(KIND_ENV) tests/cluster/kind/down.sh
