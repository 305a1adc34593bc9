# Fine-tuning service: every command a developer, operator or CI needs.
# `make` (or `make help`) lists them.

SHELL := /bin/bash
.DEFAULT_GOAL := help

UV ?= uv
# The trainer's own virtual environment (torch, transformers, peft, trl), kept apart
# from .venv so the API and worker never carry torch. Built with plain pip.
PYTHON ?= python3
TRAINER_VENV := .venv-trainer
SHARED_TIKTOKEN := $(abspath $(CURDIR)/../shared/tiktoken)
ifneq ($(wildcard $(SHARED_TIKTOKEN)),)
export TIKTOKEN_CACHE_DIR ?= $(SHARED_TIKTOKEN)
endif

.PHONY: help install install-trainer dev test test-trainer trainer lint format typecheck openapi openapi-check bench check

help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.venv/.installed: pyproject.toml uv.lock
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv
	$(UV) sync --frozen
	@touch $@ .venv/.runtime

# What running needs and no more (no linters, fuzzers or test tools); keeps what is there.
.venv/.runtime: pyproject.toml uv.lock
	@command -v $(UV) >/dev/null || python3 -m pip install --quiet uv
	$(UV) sync --frozen --no-default-groups --inexact
	@touch $@

$(TRAINER_VENV)/.installed: trainer/requirements.txt
	@test -x $(TRAINER_VENV)/bin/python || $(PYTHON) -m venv $(TRAINER_VENV)
	$(TRAINER_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r trainer/requirements.txt
	@touch $@

install: .venv/.installed $(TRAINER_VENV)/.installed ## Create .venv (uv.lock) and .venv-trainer (trainer/requirements.txt)

install-trainer: $(TRAINER_VENV)/.installed ## Create only .venv-trainer, the trainer's torch environment

dev: .venv/.runtime ## Run Redis (if REDIS_URL unset), the simulator (if OPENAI_API_KEY unset), API and worker (+ the trainer when .venv-trainer exists)
	@[ -n "$$REDIS_URL" ] || scripts/system-deps.sh redis-server:redis-server
	$(UV) run --frozen --no-sync python scripts/dev.py

test: install ## Run the test suite (starts its own redis-server; the trainer's tests use .venv-trainer)
	@scripts/system-deps.sh redis-server:redis-server chromium:chromium jq:jq
	$(UV) run --frozen pytest $(PYTEST_ARGS)

test-trainer: install ## Run only the trainer's tests (tests/trainer)
	$(UV) run --frozen pytest tests/trainer $(PYTEST_ARGS)

trainer: install-trainer ## Run the trainer on :8200 (MODELS_DIR, TRAINER_DATA_DIR; see docs/trainer.md)
	$(TRAINER_VENV)/bin/python -m trainer --port 8200 --models-dir $${MODELS_DIR:-.var/models} --data-dir $${TRAINER_DATA_DIR:-.var/trainer}

lint: install ## Ruff lint and format check
	$(UV) run --frozen ruff check .
	$(UV) run --frozen ruff format --check .

format: install ## Apply ruff formatting and safe fixes
	$(UV) run --frozen ruff format .
	$(UV) run --frozen ruff check --fix .

typecheck: install ## mypy --strict on service, worker, simulator, trainer
	$(UV) run --frozen mypy

openapi: install ## Export openapi/openapi.json from the app
	$(UV) run --frozen python -m service.openapi_export

openapi-check: install ## Fail if openapi/openapi.json differs from a fresh export
	$(UV) run --frozen python -m service.openapi_export --check

bench: install ## Run the benchmarks in bench/ (prints ratios against baselines)
	$(UV) run --frozen python -m bench

check: lint typecheck openapi-check test ## Everything CI runs
