# Shoal: `make run` starts a node, `make test` runs lint and the whole suite.
SHELL := /bin/bash
export UV_PYTHON_DOWNLOADS := never
export PATH := $(HOME)/.local/bin:$(PATH)
UV := uv

DATA_DIR ?= $(HOME)/.local/share/shoal
API_ADDR ?= 127.0.0.1:7070
RUNTIME ?= runc

.PHONY: bootstrap run test lint format bench proto image clean

bootstrap:
	@scripts/system-deps.sh
	@scripts/bootstrap.sh

# RUNTIME=cri: containerd through CRI; scripts/setup_containerd.py checks the running one
# (or sets one up for Shoal and starts it), then the agent talks to CRI_ENDPOINT.
CRI_ENDPOINT ?= unix:///run/containerd/containerd.sock

run: bootstrap
ifeq ($(RUNTIME),cri)
	$(UV) run python scripts/setup_containerd.py --data-dir $(DATA_DIR) --endpoint $(CRI_ENDPOINT)
	$(UV) run shoal agent --data-dir $(DATA_DIR) --api-addr $(API_ADDR) --runtime cri \
		--cri-endpoint $(CRI_ENDPOINT)
else
	$(UV) run shoal agent --data-dir $(DATA_DIR) --api-addr $(API_ADDR) --runtime $(RUNTIME)
endif

lint: bootstrap
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy packages tests bench
	$(UV) run lint-imports

test: lint
	$(UV) run pytest

# The node image for docker-compose.yml (shoal:dev), built without reaching PyPI:
# a wheelhouse made here, the base image debootstrapped when it cannot be pulled.
image: bootstrap
	scripts/build_image.sh

proto: bootstrap
	$(UV) run python -m grpc_tools.protoc -Ipackages/cluster/proto \
		--python_out=packages/cluster/src/shoal/cluster/grpc/_pb \
		--pyi_out=packages/cluster/src/shoal/cluster/grpc/_pb packages/cluster/proto/shoal_node.proto
	$(UV) run python -m grpc_tools.protoc -Ipackages/runtime/proto \
		--python_out=packages/runtime/src/shoal/runtime/cri/_pb \
		--pyi_out=packages/runtime/src/shoal/runtime/cri/_pb packages/runtime/proto/cri_api.proto

format: bootstrap
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

bench: bootstrap
	$(UV) run python bench/scheduler.py
	$(UV) run python bench/start_latency.py
	$(UV) run python bench/mcp_latency.py
	$(UV) run python bench/gossip.py
	$(UV) run python bench/failover.py
	$(UV) run python bench/cli_latency.py
	$(UV) run python bench/scale.py
	$(UV) run python bench/rollout.py
	$(UV) run python bench/manifests.py
	$(UV) run python bench/ui_render.py

clean:
	rm -rf .venv .mypy_cache .ruff_cache .pytest_cache
