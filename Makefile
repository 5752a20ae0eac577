# pg_ta — two commands: `make run` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PG_CONFIG     ?= /usr/lib/postgresql/15/bin/pg_config
DEV_DIR       ?= .data/dev
DEV_PORT      ?= 5433
SYMBOLS       ?= BTCUSDT,ETHUSDT
MARKET        ?= spot
CARGO_RELEASE  = cargo build --release --locked
TA_FEED        = target/release/ta-feed

.PHONY: help deps install feed run test bench bench-indicators bench-screener bench-engine bench-import bench-timescaledb bench-feed fmt lint clean-data

help:
	@echo "make run    install what is missing, build, start a local cluster (.data/, 127.0.0.1:$(DEV_PORT)),"
	@echo "            apply sql/, stream $(SYMBOLS) from Binance (DATABASE_URL, BINANCE_WS_URL,"
	@echo "            BINANCE_REST_URL, MARKET=spot|usdm, SYMBOLS=a,b|all override)"
	@echo "make test   everything CI runs (.ci/run calls exactly this)"
	@echo "make bench  the indicator and screener benchmarks (prints ratios and latencies)"

deps:
	@.ci/install-deps

# Build and install the pg_ta extension into the PostgreSQL that PG_CONFIG names.
install: deps
	@echo "==> building and installing pg_ta (release)"
	@PG_CONFIG=$(PG_CONFIG) .ci/install-ext release

feed:
	@echo "==> building ta-feed (release)"
	@$(CARGO_RELEASE) -p ta-feed

run: install feed
	@set -euo pipefail; \
	if [ -z "$${DATABASE_URL:-}" ]; then \
	  .ci/cluster start $(DEV_DIR) $(DEV_PORT); \
	  export DATABASE_URL="postgres://postgres@127.0.0.1:$(DEV_PORT)/postgres"; \
	  echo "==> connect with: psql -h 127.0.0.1 -p $(DEV_PORT) -U postgres"; \
	else \
	  echo "==> using DATABASE_URL (no local cluster)"; \
	fi; \
	$(TA_FEED) migrate; \
	echo "==> alerts: $(TA_FEED) listen   (or LISTEN ta_alerts; in psql)"; \
	echo "==> streaming $(MARKET) $(SYMBOLS); Ctrl-C stops"; \
	exec $(TA_FEED) stream --market "$(MARKET)" --symbols "$(SYMBOLS)"

test:
	@.ci/test

bench: bench-indicators bench-screener bench-engine bench-import

bench-indicators: install
	@.ci/bench indicators

bench-screener: install
	@.ci/bench screener

bench-engine: install
	@.ci/bench engine

bench-import: install feed
	@.ci/bench import

# 504 USD-M perpetuals from the fake exchange: cold start, close -> NOTIFY latency, RSS, CPU
bench-feed: install feed
	@.ci/bench feed

# needs TimescaleDB installed for PG_CONFIG (the local cluster preloads it then)
bench-timescaledb: install feed
	@.ci/bench timescaledb

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy -p pg_ta --all-targets --locked -- -D warnings
	cargo clippy -p ta-feed --all-targets --locked -- -D warnings

clean-data:
	.ci/cluster stop $(DEV_DIR) || true
	rm -rf .data
