# sluice: `make demo` runs the sample job on local defaults; `make test` runs every test.
# Both install what they need (the tansu broker, DuckDB and pyarrow) into .tools/ first.

CARGO ?= cargo
SLUICE = $(or $(CARGO_TARGET_DIR),target)/debug/sluice

.PHONY: tools build test lint demo bench clean

tools:
	@tests/support/tools.sh

build:
	$(CARGO) build --bins

test: tools
	CARGO=$(CARGO) tests/support/run-tests.sh

# Throughput, ceilings, freshness, memory and resume figures (medians), then micro-benchmarks.
# SLUICE_BENCH_EVENTS, SLUICE_BENCH_RUNS tune the size. Figures: target/bench/latest.json.
bench: tools
	$(CARGO) build --release --bins
	tests/support/with-broker.sh $(CARGO) bench --bench e2e
	$(CARGO) bench --bench micro -- --warm-up-time 1 --measurement-time 3

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets -- -D warnings

demo: tools build
	SLUICE=$(SLUICE) tests/support/with-broker.sh tests/support/demo.sh

clean:
	rm -rf demo-warehouse
