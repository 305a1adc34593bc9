# Fine-tuning service: every command a developer, operator or CI needs.
# `make` (or `make help`) lists them.

SHELL := /bin/bash
.DEFAULT_GOAL := help

UV ?= uv
SHARED_TIKTOKEN := $(abspath $(CURDIR)/../shared/tiktoken)
ifneq ($(wildcard $(SHARED_TIKTOKEN)),)
export TIKTOKEN_CACHE_DIR ?= $(SHARED_TIKTOKEN)
endif

.PHONY: help install dev test lint format typecheck openapi openapi-check bench check

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.venv/.installed: pyproject.toml uv.lock
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@

install: .venv/.installed ## Create .venv with every dependency from uv.lock

dev: install ## Run Redis (if REDIS_URL unset), the simulator (if OPENAI_API_KEY unset), API and worker
	$(UV) run --frozen python scripts/dev.py

test: install ## Run the test suite (starts its own redis-server)
	$(UV) run --frozen pytest $(PYTEST_ARGS)

lint: install ## Ruff lint and format check
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

format: install ## Apply ruff formatting and safe fixes
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

typecheck: install ## mypy --strict on service, worker, simulator
	$(UV) run --frozen mypy

openapi: install ## Export openapi/openapi.json from the app
	$(UV) run --frozen python -m service.openapi_export

openapi-check: install ## Fail if openapi/openapi.json differs from a fresh export
	$(UV) run --frozen python -m service.openapi_export --check

bench: install ## Run the benchmarks in bench/ (prints ratios against baselines)
	$(UV) run --frozen python -m bench

check: lint typecheck openapi-check test ## Everything CI runs
