# pg_ta — two commands: `make run` and `make test` (see README.md).
SHELL := /bin/bash
.DEFAULT_GOAL := help

# PostgreSQL major for `make run`, `make install` and the benches: 18 (default) or 15
PG_MAJOR      ?= 18
PG_CONFIG     ?= $(shell .ci/pg-config $(PG_MAJOR))
DEV_DIR       ?= .data/dev-$(PG_MAJOR)
DEV_PORT      ?= 5433
SYMBOLS       ?= BTCUSDT,ETHUSDT
MARKET        ?= spot
CARGO_RELEASE  = cargo build --release --locked
TA_FEED        = target/release/ta-feed

.PHONY: help deps install feed run test bench bench-indicators bench-screener bench-engine bench-import bench-timescaledb bench-feed bench-ticks bench-features fmt lint clean-data

help:
	@echo "make run    install what is missing, build, start a local PostgreSQL $(PG_MAJOR) cluster"
	@echo "            ($(DEV_DIR), 127.0.0.1:$(DEV_PORT)), apply sql/, stream $(SYMBOLS) from Binance"
	@echo "            (PG_MAJOR=15|18, DATABASE_URL, BINANCE_WS_URL, BINANCE_REST_URL, MARKET=spot|usdm,"
	@echo "            SYMBOLS=a,b|all override)"
	@echo "make test   everything CI runs, on PostgreSQL 18 and 15 (.ci/run calls exactly this)"
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
	  PG_CONFIG=$(PG_CONFIG) .ci/cluster start $(DEV_DIR) $(DEV_PORT); \
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

BENCH = PG_MAJOR=$(PG_MAJOR) PG_CONFIG=$(PG_CONFIG) DEV_PORT=$(DEV_PORT) .ci/bench

bench-indicators: install
	@$(BENCH) indicators

bench-screener: install
	@$(BENCH) screener

bench-engine: install
	@$(BENCH) engine

bench-import: install feed
	@$(BENCH) import

# 504 USD-M perpetuals from the fake exchange: cold start, close -> NOTIFY latency, RSS, CPU
bench-feed: install feed
	@$(BENCH) feed

# aggTrades import vs plain COPY, bytes per tick, 500 USD-M symbols of aggTrades streamed for
# 5 minutes, a 60 s database outage under load (a private cluster on port 5455)
bench-ticks: install feed
	@$(BENCH) ticks

# training sets: feature rows into numpy (market.features_range + binary COPY) vs candles
# fetched with psycopg and the same columns computed with pandas/TA-Lib
bench-features: install
	@$(BENCH) features

# needs TimescaleDB installed for PG_CONFIG (the local cluster preloads it then)
bench-timescaledb: install feed
	@$(BENCH) timescaledb

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy -p pg_ta --all-targets --locked --no-default-features --features pg18 -- -D warnings
	cargo clippy -p pg_ta --all-targets --locked --no-default-features --features pg15 -- -D warnings
	cargo clippy -p ta-feed --all-targets --locked -- -D warnings

clean-data:
	PG_CONFIG=$(shell .ci/pg-config 18) .ci/cluster stop .data/dev-18 || true
	PG_CONFIG=$(shell .ci/pg-config 15) .ci/cluster stop .data/dev-15 || true
	rm -rf .data
