# sluice: `make demo` runs the sample job on local defaults; `make test` runs every test.
# Both install what they need (Apache Kafka, DuckDB and pyarrow) into .tools/ first.

CARGO ?= cargo
SLUICE = $(or $(CARGO_TARGET_DIR),target)/debug/sluice

.PHONY: tools build test chaos lint demo bench fuzz clean broker broker-stop sql

tools:
	@tests/support/tools.sh

build:
	$(CARGO) build --bins

# The crash tests need the failpoints (a cargo feature no release build has).
test: tools
	CARGO=$(CARGO) tests/support/run-tests.sh --features failpoints

# The churn test at soak size (not part of `make test`): loaders killed, paused and raced by
# scheduled runs and backfills while a producer writes, then an audit id by id.
# CHAOS_KILLS kills (default 1000), CHAOS_RATE events/s, CHAOS_SEED to repeat a run.
CHAOS_KILLS ?= 1000
CHAOS_RATE ?= 2000
chaos: tools
	SLUICE_CHURN_KILLS=$(CHAOS_KILLS) SLUICE_CHURN_RATE=$(CHAOS_RATE) $(if $(CHAOS_SEED),SLUICE_CHURN_SEED=$(CHAOS_SEED)) \
	  tests/support/with-broker.sh $(CARGO) test --features failpoints --test churn -- --nocapture

# Throughput, ceilings, freshness, memory and resume figures (medians), then micro-benchmarks.
# SLUICE_BENCH_EVENTS, SLUICE_BENCH_RUNS tune the size. Figures: target/bench/latest.json.
# BASELINE=path/to/an/older/sluice also times that binary, in turns with this one.
bench: tools
	$(CARGO) build --release --bins --examples
	$(if $(BASELINE),SLUICE_BENCH_BASELINE=$(abspath $(BASELINE))) tests/support/with-broker.sh $(CARGO) bench --bench e2e
	$(CARGO) bench --bench micro -- --warm-up-time 1 --measurement-time 3

# The decoders fuzzed (not part of `make test`): the JSON fast path against arrow-json, and Avro
# payloads (raw and Confluent-framed, evolved writer schemas). FUZZ_SECONDS per target (600).
FUZZ_SECONDS ?= 600
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) tests/support/fuzz.sh

# Formatting, clippy, and the module layering (no import circle, no upward import; see
# tests/support/layers.py), whose checker first proves it still sees both.
lint:
	python3 tests/support/layers.py --self-test
	python3 tests/support/layers.py
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --all-features -- -D warnings

demo: tools build
	SLUICE=$(SLUICE) tests/support/with-broker.sh tests/support/demo.sh

# A local Apache Kafka (from .tools/) for trying sluice on: `eval $$(make -s broker)` starts it
# (or finds it running) and exports SLUICE_BROKERS; `make broker-stop` stops it.
BROKER_DIR = $(CURDIR)/.tools/broker
broker:
	@tests/support/tools.sh >&2
	@if [ -f $(BROKER_DIR)/pid ] && kill -0 $$(cat $(BROKER_DIR)/pid) 2>/dev/null; then \
	  . $(BROKER_DIR)/env; echo "export SLUICE_BROKERS=$$SLUICE_TEST_BROKERS"; \
	else \
	  echo "export SLUICE_BROKERS=$$(tests/support/broker.sh start $(BROKER_DIR))"; \
	fi
broker-stop:
	tests/support/broker.sh stop $(BROKER_DIR)

# DuckDB with its Delta and Iceberg extensions (offline, from .tools/venv): make sql Q="SELECT count(*) FROM delta_scan('warehouse/orders')" (or iceberg_scan)
sql:
	@.tools/venv/bin/python tests/support/sql.py "$(Q)"

clean:
	rm -rf demo-warehouse
