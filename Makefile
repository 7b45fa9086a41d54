# Interaction Logger — developer commands. `make` alone lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
# nextest runs test binaries in parallel processes and reports clearly; plain cargo test is
# the fallback where it is not installed. Doc tests run separately (nextest does not run them).
NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)

.PHONY: help
help: ## List every target
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: services
services: ## Make sure PostgreSQL and RabbitMQ are running (starts them if installed)
	@scripts/ensure-services.sh

.PHONY: test
test: services ## Run every test of the workspace (starts PostgreSQL and RabbitMQ first)
	$(CARGO) build --workspace --locked --bins  # the end-to-end tests run these binaries
	$(CARGO) test --workspace --locked --doc
ifeq ($(NEXTEST),yes)
	$(CARGO) nextest run --workspace --locked --no-fail-fast
else
	$(CARGO) test --workspace --locked --no-fail-fast --lib --bins --tests
endif

.PHONY: lint
lint: ## rustfmt check + clippy with -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: schemathesis
schemathesis: services ## Property-based API tests from /openapi.json against a real ingest-api (~2 min)
	scripts/schemathesis.sh

.PHONY: bench-core
bench-core: ## Parse + normalize throughput of interaction-core (one core, ~10 s)
	$(CARGO) bench --locked -p interaction-core --bench normalize

.PHONY: bench
bench: services ## Throughput, latency and memory of the whole pipeline vs the raw limits (a few minutes)
	$(CARGO) build --release --locked --bins
	$(or $(CARGO_TARGET_DIR),target)/release/bench

.PHONY: bench-quick
bench-quick: services ## The same, in about 30 seconds
	$(CARGO) build --release --locked --bins
	$(or $(CARGO_TARGET_DIR),target)/release/bench --quick

.PHONY: run
run: ## Start PostgreSQL, RabbitMQ, ncanto-mock, ingest-api and forwarder locally (Ctrl-C stops)
	@scripts/run.sh

.PHONY: clean
clean: ## Remove build output
	$(CARGO) clean
