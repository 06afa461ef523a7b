# agentrouter-auth: the two commands are `make run` and `make test`.
# Every target that needs Python bootstraps .venv from a bare python3 first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
STAMP  := $(VENV)/.installed-stamp
CONTRACT := $(PY) tools/contract.py

# Development server settings (override on the command line: make run HTTP_ADDR=...).
KEYS_DIR  ?= var/keys
GRPC_ADDR ?= 127.0.0.1:9090
HTTP_ADDR ?= 127.0.0.1:8080

.DEFAULT_GOAL := help
.PHONY: help install run test lint breaking generate check-generated stage freeze lock clean bench

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 18

$(STAMP): pyproject.toml gen/pyproject.toml sdk/python/pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check \
		-c constraints.txt -e ./gen -e ./sdk/python -e '.[dev,bench]'
	@touch $@

NODE_DIR   := tests/interop/node
NODE_STAMP := $(NODE_DIR)/node_modules/.installed-stamp

$(NODE_STAMP): $(NODE_DIR)/package.json $(NODE_DIR)/package-lock.json
	npm ci --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error
	@touch $@

install: $(STAMP) ## Create/update .venv with the pinned dependencies

run: $(STAMP) ## Start the server on loopback with a persisted development key ring
	$(BIN)/agentrouter-auth keys init --keys-dir $(KEYS_DIR)
	exec $(BIN)/agentrouter-auth serve --keys-dir $(KEYS_DIR) \
		--http-addr $(HTTP_ADDR) --grpc-addr $(GRPC_ADDR)

test: $(STAMP) $(NODE_STAMP) lint check-generated breaking ## Lint, contract checks and the whole test suite
	$(PY) -m pytest

lint: $(STAMP) ## buf lint + format, ruff, mypy
	$(CONTRACT) lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

breaking: $(STAMP) ## buf breaking against the released API baseline (api/released.json)
	$(CONTRACT) breaking

generate: $(STAMP) ## Regenerate gen/ from proto/ with the pinned tools
	$(CONTRACT) generate

check-generated: $(STAMP) ## Fail when gen/ differs from a fresh generation
	$(CONTRACT) check-generated

stage: $(STAMP) ## Copy google/api protos from the installed package into .build/
	$(CONTRACT) stage

freeze: $(STAMP) ## Record the current contract as the released API baseline
	$(CONTRACT) freeze

lock: ## Re-resolve the dependencies and rewrite constraints.txt with exact pins
	rm -rf .build/lock-venv
	$(PYTHON) -m venv .build/lock-venv
	.build/lock-venv/bin/python -m pip install --quiet --disable-pip-version-check -e ./gen -e ./sdk/python -e '.[dev,bench]'
	( echo "# Exact pins of the whole dependency tree; refreshed by 'make lock'."; \
	  .build/lock-venv/bin/python -m pip freeze --exclude-editable | grep -v '^-e ' ) > constraints.txt
	rm -rf .build/lock-venv

DURATION ?= 10
ROUNDS   ?= 2
BENCH_TOOLS := wrk h2load nginx

bench: $(STAMP) ## Load-test every protocol against baselines (DURATION=seconds, ROUNDS=n)
	@missing=""; for t in $(BENCH_TOOLS); do command -v $$t >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && apt-get install -y -qq wrk nghttp2-client nginx-light >/dev/null; \
	fi
	$(PY) bench/run.py --duration $(DURATION) --rounds $(ROUNDS) --out bench/results

clean: ## Remove the virtual environment and build output (keeps var/keys)
	rm -rf $(VENV) .build .mypy_cache .ruff_cache .pytest_cache
