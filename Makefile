# Interaction Logger — developer commands. `make` alone lists them.
SHELL := /bin/bash
.DEFAULT_GOAL := help

CARGO ?= cargo
# nextest runs test binaries in parallel processes and reports clearly; plain cargo test is
# the fallback where it is not installed. Doc tests run separately (nextest does not run them).
NEXTEST := $(shell $(CARGO) nextest --version >/dev/null 2>&1 && echo yes)

.PHONY: help
help: ## List every target
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-17s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: services
services: ## Make sure PostgreSQL and RabbitMQ are running (starts them if installed)
	@scripts/ensure-services.sh

SDK := sdk/web

# npm ci installs exactly package-lock.json's dev tools (esbuild, TypeScript, ESLint) when they
# are missing or older than the lock file; the SDK itself has no runtime dependencies.
$(SDK)/node_modules/.package-lock.json: $(SDK)/package-lock.json
	cd $(SDK) && npm ci --no-audit --no-fund --loglevel=error

.PHONY: sdk
sdk: $(SDK)/node_modules/.package-lock.json ## Build the web SDK: sdk/web/dist (ESM, .d.ts, interaction-logger.min.js)
	cd $(SDK) && npm run --silent build

.PHONY: test
test: services sdk ## Run every test of the workspace and the web SDK's, browser tests included (starts PostgreSQL and RabbitMQ, installs Chromium)
	scripts/ensure-browser.sh
	cd $(SDK) && npm test
	$(CARGO) build --workspace --locked --bins  # the end-to-end tests run these binaries
	$(CARGO) test --workspace --locked --doc
ifeq ($(NEXTEST),yes)
	$(CARGO) nextest run --workspace --locked --no-fail-fast
else
	$(CARGO) test --workspace --locked --no-fail-fast --lib --bins --tests
endif

.PHONY: test-browser
test-browser: services sdk ## Only the web SDK's tests in headless Chromium against a real ingest-api (tests/e2e/browser.rs)
	scripts/ensure-browser.sh
	$(CARGO) build --workspace --locked --bins
	$(CARGO) nextest run --locked -p e2e -E 'test(/^browser::/)'

.PHONY: lint
lint: $(SDK)/node_modules/.package-lock.json ## rustfmt check + clippy with -D warnings; the SDK's ESLint and strict tsc
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings
	cd $(SDK) && npm run --silent lint && npm run --silent typecheck

.PHONY: fmt
fmt: ## Format the code
	$(CARGO) fmt --all

.PHONY: schemathesis
schemathesis: services ## Property-based API tests from /openapi.json against a real ingest-api (~2 min)
	scripts/schemathesis.sh

.PHONY: bench-core
bench-core: ## Parse + normalize throughput of interaction-core (one core, ~10 s)
	$(CARGO) bench --locked -p interaction-core --bench normalize

.PHONY: faults
faults: services ## Fault scenarios with their reports: broker/database/Ncanto outages, kills, replicas, poison
	$(CARGO) build --workspace --locked --bins
	FAULTS_NCANTO_DOWN_SECS=$${FAULTS_NCANTO_DOWN_SECS:-60} $(CARGO) nextest run --locked -p e2e --no-capture -E 'test(/fault_/)'

.PHONY: bench
bench: services ## Throughput, latency and memory of the whole pipeline vs the raw limits (a few minutes)
	$(CARGO) build --release --locked --bins
	$(or $(CARGO_TARGET_DIR),target)/release/bench

.PHONY: bench-quick
bench-quick: services ## The same, in about 20 seconds
	$(CARGO) build --release --locked --bins
	$(or $(CARGO_TARGET_DIR),target)/release/bench --quick

.PHONY: bench-storage
bench-storage: services ## The store at 50 million events: ingest, retention, replay, /health, disk (~1 h, ~35 GB disk)
	$(CARGO) build --release --locked --bins
	scripts/bench-storage.py --bin-dir $(or $(CARGO_TARGET_DIR),target)/release

.PHONY: run
run: ## Start PostgreSQL, RabbitMQ, ncanto-mock, ingest-api and forwarder locally (Ctrl-C stops)
	@scripts/run.sh

# --- deployment (deploy/, k8s/; README "Deploying") ---
DOCKER ?= docker
COMPOSE ?= $(DOCKER) compose -f deploy/docker-compose.yml
IMAGE_TAG ?= dev
OVERLAY ?= dev

.PHONY: images
images: ## Build the images of ingest-api, forwarder and ncanto-mock (IMAGE_TAG=dev)
	for target in ingest-api forwarder ncanto-mock; do \
	  $(DOCKER) build -f deploy/Dockerfile --target $$target -t interaction-logger/$$target:$(IMAGE_TAG) . || exit 1; \
	done

.PHONY: up
up: ## Start the whole pipeline in Docker (compose: gateway on :8080, 2 ingest-api replicas)
	$(COMPOSE) up -d --build

.PHONY: down
down: ## Stop the compose pipeline (keeps its data volumes)
	$(COMPOSE) down

.PHONY: compose-validate
compose-validate: ## Check docker-compose.yml (compose-spec schema + cross-checks) and the Dockerfile, offline
	@scripts/validate-deploy.sh compose

.PHONY: k8s-validate
k8s-validate: ## Render every k8s overlay and check it against the Kubernetes schemas; alerts, dashboard
	@scripts/validate-deploy.sh k8s

.PHONY: k8s-apply
k8s-apply: ## Apply a k8s overlay to the current context: config, migration Job, then rollout (OVERLAY=dev)
	@scripts/k8s-apply.sh $(OVERLAY)

.PHONY: gateway-test
gateway-test: ## Run nginx with deploy/nginx's config in front of a real ingest-api and check it
	@timeout -k 30 300 scripts/gateway-test.sh  # bounded: cleanup runs on the timeout too

.PHONY: clean
clean: ## Remove build output
	$(CARGO) clean
