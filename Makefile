# agentrouter-auth: the two commands are `make run` and `make test`; `make check` is the fast loop.
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
.PHONY: help install run test check lint lint-sdk breaking generate check-generated stage freeze lock clean bench sdk browser postgresql-server

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

# The SDKs' toolchains: Go code generators pinned by tools/go/go.sum, the TypeScript SDK's
# packages (protoc-gen-es, tsc, esbuild, playwright-core) pinned by its package-lock.json.
GO_TOOLS := .build/bin/protoc-gen-go .build/bin/protoc-gen-connect-go
TS_DIR   := sdk/typescript
TS_STAMP := $(TS_DIR)/node_modules/.installed-stamp

$(GO_TOOLS) &: tools/go/go.mod tools/go/go.sum
	cd tools/go && go build -o ../../.build/bin/ \
		google.golang.org/protobuf/cmd/protoc-gen-go connectrpc.com/connect/cmd/protoc-gen-connect-go

$(TS_STAMP): $(TS_DIR)/package.json $(TS_DIR)/package-lock.json
	npm ci --prefix $(TS_DIR) --no-audit --no-fund --loglevel=error
	@touch $@

# Headless Chromium for the browser test (Debian's package; the one thing installed as root).
CHROMIUM := /usr/bin/chromium
$(CHROMIUM):
	apt-get update -qq && apt-get install -y -qq chromium >/dev/null

# nginx as the HTTP cache in front of the server in tests/integration/test_connect_caching.py
# (Debian's nginx-light, as make bench installs it).
NGINX := /usr/sbin/nginx
$(NGINX):
	apt-get update -qq && apt-get install -y -qq nginx-light >/dev/null

# PostgreSQL server binaries for the PostgreSQL key store's tests (Debian's package). The tests
# run a server of their own on a temporary folder, so Debian's default cluster is not created.
PG_INITDB := $(firstword $(wildcard /usr/lib/postgresql/*/bin/initdb))
postgresql-server:
	@test -n "$(PG_INITDB)" || { \
		mkdir -p /etc/postgresql-common/createcluster.d && \
		echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/agentrouter-auth.conf && \
		apt-get update -qq && apt-get install -y -qq postgresql >/dev/null; }

install: $(STAMP) ## Create/update .venv with the pinned dependencies

run: $(STAMP) ## Start the server on loopback with a persisted development key ring
	$(BIN)/agentrouter-auth keys init --keys-dir $(KEYS_DIR)
	exec $(BIN)/agentrouter-auth serve --keys-dir $(KEYS_DIR) \
		--http-addr $(HTTP_ADDR) --grpc-addr $(GRPC_ADDR)

test: $(STAMP) $(NODE_STAMP) $(TS_STAMP) $(GO_TOOLS) $(CHROMIUM) $(NGINX) postgresql-server lint lint-sdk check-generated breaking ## Lint, contract checks and the whole test suite, all languages
	$(PY) -m pytest

# The fast loop while changing code: no SDK toolchains, no contract regeneration, no slow tests.
# (pytest exits 5 when it collects nothing, and make fails on it, as for `make test`.)
check: $(STAMP) lint ## Lint + the unit tests not marked slow (the loop for a change)
	$(PY) -m pytest tests/unit -m "not slow" -q

lint: $(STAMP) ## buf lint + format, ruff, mypy
	$(CONTRACT) lint
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

lint-sdk: $(TS_STAMP) ## gofmt + go vet of the Go SDK, strict tsc of the TypeScript SDK
	@unformatted="$$(gofmt -l sdk/go)"; if [ -n "$$unformatted" ]; then \
		echo "gofmt would change: $$unformatted"; exit 1; fi
	cd sdk/go && go vet ./...
	$(TS_DIR)/node_modules/.bin/tsc -p $(TS_DIR)/tsconfig.json --noEmit

breaking: $(STAMP) ## buf breaking against the released API baseline (api/released.json)
	$(CONTRACT) breaking

generate: $(STAMP) $(GO_TOOLS) $(TS_STAMP) ## Regenerate every language's code from proto/ (and stamp sdk/VERSION)
	$(CONTRACT) generate

check-generated: $(STAMP) $(GO_TOOLS) $(TS_STAMP) ## Fail when generated code differs from a fresh generation
	$(CONTRACT) check-generated

sdk: $(STAMP) $(TS_STAMP) ## Write the three SDK tarballs into dist/sdk/
	$(PY) tools/tarballs.py --out dist/sdk

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
# The Go peer: connect-go + vanguard-go (and bare net/http) on the Go SDK's generated code,
# every module pinned by bench/goserver/go.sum (-mod=readonly: go.mod and go.sum never drift).
GO_PEER := .build/bin/bench-goserver

$(GO_PEER): bench/goserver/go.mod bench/goserver/go.sum bench/goserver/main.go sdk/go/go.mod sdk/go/go.sum $(wildcard sdk/go/genapi/api/tars/auth/v1/*.go)
	cd bench/goserver && go build -mod=readonly -o ../../$(GO_PEER) .

bench: $(STAMP) postgresql-server $(GO_PEER) ## Load-test every protocol against baselines and a Go peer (DURATION=seconds, ROUNDS=n)
	@missing=""; for t in $(BENCH_TOOLS); do command -v $$t >/dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then \
		apt-get update -qq && apt-get install -y -qq wrk nghttp2-client nginx-light >/dev/null; \
	fi
	$(PY) -m bench.run --duration $(DURATION) --rounds $(ROUNDS) --out bench/results

clean: ## Remove the virtual environment and build output (keeps var/keys)
	rm -rf $(VENV) .build .mypy_cache .ruff_cache .pytest_cache
