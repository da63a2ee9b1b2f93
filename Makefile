# ModelForge: one entry point for install, codegen, the local stack, tests and benchmarks.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV      := .venv
PY        := $(VENV)/bin/python
PIP       := $(PY) -m pip
STAMP     := $(VENV)/.modelforge-installed
# uv, pinned: the same version as the lock's dev group (so a sync keeps it) and the images' UV_IMAGE.
UV_VERSION := 0.13.9
UV        := $(VENV)/bin/uv
# The uv workspace's members (pyproject.toml [tool.uv.workspace]); the CUDA images' set is locked apart.
PACKAGES  := protos common devkit gateway trainer-svc training registry-svc inference-svc hardware-svc cli
CUDA_PROJECT := deploy/docker/cuda
DEP_FILES := pyproject.toml uv.lock $(foreach p,$(PACKAGES),$(p)/pyproject.toml) \
  $(CUDA_PROJECT)/pyproject.toml $(CUDA_PROJECT)/uv.lock
PROTO_SRC := $(sort $(wildcard protos/modelforge/v1/*.proto))
PROTO_STAMP := protos/gen/.stamp
PYTEST_ARGS ?=

.PHONY: help install lock protos up down status demo test test-fast lint typecheck fmt bench gpu-check clean images images-push

help:
	@echo "make install   .venv from uv.lock (uv sync --frozen): every package editable, the dev tools,"
	@echo "               generated gRPC code, nats-server, kubectl"
	@echo "make lock      re-resolve uv.lock and deploy/docker/cuda/uv.lock after a dependency change"
	@echo "make up        start nats (unless one is reachable), the four services and the gateway;"
	@echo "               again with one down: start only what is missing"
	@echo "make down      stop everything 'make up' started, whatever MODELFORGE_DATA_DIR is"
	@echo "make demo      build a tiny model + dataset, fine-tune it through the API, generate"
	@echo "make lint      ruff, mypy --strict (make typecheck), buf lint and buf breaking (protos/ against"
	@echo "               the last landed main: protos/buf-breaking.sh)"
	@echo "make test      lint, then the whole test suite"
	@echo "make bench     side-by-side benchmarks (writes bench/RESULTS.md)"
	@echo "make gpu-check on a GPU: QLoRA with both providers through the stack vs plain scripts (writes bench/GPU.md);"
	@echo "               serving many users on the GPU, in process and through the stack (bench/GPU-serving.md)"
	@echo "make images    the five service images from deploy/docker/Dockerfile via docker-bake.hcl"
	@echo "               (Docker with buildx; IMAGE_PREFIX=modelforge IMAGE_TAG=0.1.0 by default)"

install: $(STAMP) $(PROTO_STAMP)
	@# Headless Chromium for the browser test: Debian's package, installed when missing and running as
	@# root (as CI does); Playwright drives it by path and never downloads a browser.
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium (apt-get) for the browser test"; \
	  { apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }; } \
	    || echo "note: chromium could not be installed; the browser test skips (fails with MODELFORGE_REQUIRE_BROWSER=1)"; \
	fi

# Runs again only when a dependency file changes. Everything comes from uv.lock (uv sync --frozen),
# torch included: the lock takes it from the CPU wheel on disk (pyproject.toml [tool.uv.sources]), so
# nothing resolves PyPI's multi-GB CUDA build. uv comes first, pinned, with pip (ensurepip where a sync
# removed pip). A lock that no longer matches the pyproject files stops the install here: `make lock`.
$(STAMP): $(DEP_FILES)
	test -x $(PY) || python3 -m venv $(VENV)
	$(UV) --version 2>/dev/null | grep -qx "uv $(UV_VERSION)" \
	  || { $(PIP) --version >/dev/null 2>&1 || $(PY) -m ensurepip -q; $(PIP) install -q "uv==$(UV_VERSION)"; }
	$(UV) lock --check || { echo "uv.lock no longer matches the pyproject files: run 'make lock'" >&2; exit 1; }
	$(UV) lock --check --project $(CUDA_PROJECT) \
	  || { echo "deploy/docker/cuda/uv.lock no longer matches the pyproject files: run 'make lock'" >&2; exit 1; }
	@# The dependencies (grpcio-tools among them) before the packages: the protos package is the
	@# generated code, which must exist when it is installed. --inexact keeps what a venv already has
	@# (its editable packages) until the full sync below, which removes anything the lock does not list.
	$(UV) sync --frozen --inexact --no-install-workspace
	$(PY) deploy/tools/install_kubectl.py $(VENV)/bin/kubectl
	$(MAKE) --no-print-directory protos
	$(UV) sync --frozen
	touch $@

# After changing a package's dependencies: both locks, then `make install`.
lock:
	@test -x $(UV) || { test -x $(PY) || python3 -m venv $(VENV); $(PIP) install -q "uv==$(UV_VERSION)"; }
	$(UV) lock
	$(UV) lock --project $(CUDA_PROJECT)

protos: $(PROTO_STAMP)

# Generated code is not committed: protos/*.proto is the single source of truth.
$(PROTO_STAMP): $(PROTO_SRC)
	rm -rf protos/gen && mkdir -p protos/gen
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m grpc_tools.protoc -Iprotos \
	  --python_out=protos/gen --grpc_python_out=protos/gen \
	  --mypy_out=protos/gen --mypy_grpc_out=protos/gen $(PROTO_SRC)
	touch $@

up: install
	$(PY) -m modelforge_devkit.stack up

down:
	@if [ -x $(PY) ]; then $(PY) -m modelforge_devkit.stack down; else echo "nothing to stop"; fi

status: install
	$(PY) -m modelforge_devkit.stack status

demo: install
	$(PY) -m modelforge_devkit.demo

# Proto lint (STANDARD) and breaking-change check (FILE): protos/buf.yaml. buf-bin runs offline.
lint: install
	$(VENV)/bin/ruff check .
	$(MAKE) --no-print-directory typecheck
	$(VENV)/bin/buf lint protos
	BUF=$(VENV)/bin/buf protos/buf-breaking.sh

# mypy --strict over every package and the generated stubs (pyproject.toml [tool.mypy]).
MYPY_PACKAGES := modelforge modelforge_common modelforge_devkit modelforge_gateway modelforge_trainer modelforge_training \
  modelforge_registry modelforge_inference modelforge_hardware modelforge_cli
typecheck: install
	$(VENV)/bin/mypy $(foreach p,$(MYPY_PACKAGES),-p $(p))

fmt: install
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

# Two pytest-xdist workers, each given a whole test file at a time (--dist loadfile, so a file's
# module-scoped stack starts once): one process kept about one core busy, so on these 2 cores the
# suite took 27.5 min in one and 17.5 min in two (2026-12-06), under CI's 25. Ports come from
# modelforge_common.ports, claimed so the workers' stacks never share one. PYTEST_WORKERS=0: one process.
PYTEST_WORKERS ?= 2
test: lint
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Unit and component tests only (no training, no real processes).
test-fast: install
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow and not e2e" $(PYTEST_ARGS)

bench: install
	$(PY) -m bench

# On a GPU node: the platform's own stack trains QLoRA with both providers on a real-shape model;
# bench/GPU.md gets the estimate vs nvidia-smi's peak and tokens/s vs plain trl and plain unsloth.
# Without a GPU it says so and exits 0.
gpu-check: install
	$(PY) -m bench.gpu_check
	$(PY) -m bench.gpu_serving

# Container images: docker-bake.hcl builds every service from the one template, deploy/docker/Dockerfile
# (needs Docker with buildx; CI checks both statically: deploy/tests/test_dockerfiles.py). The names and
# tag default to the manifests' (modelforge/<service>:0.1.0); IMAGE_PREFIX and IMAGE_TAG given to make
# reach bake through the environment (make exports command-line variables), e.g.
#   make images-push IMAGE_PREFIX=registry.example.com/modelforge IMAGE_TAG=0.1.0
DOCKER ?= docker

images:
	$(DOCKER) buildx bake --file docker-bake.hcl --load

images-push:
	$(DOCKER) buildx bake --file docker-bake.hcl --push

clean: down
	rm -rf protos/gen $(VENV)
