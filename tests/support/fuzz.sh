#!/usr/bin/env bash
# `make fuzz`: installs cargo-fuzz into .tools/ (and the nightly toolchain it needs, if
# missing), then runs each fuzz target for FUZZ_SECONDS (default 600). A panic, a hang (10 s
# per input) or a disagreement stops with the input in fuzz/artifacts/<target>/; add it to
# fuzz/corpus/<target>/ once fixed, so it is replayed from then on.
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${FUZZ_SECONDS:-600}
targets=${FUZZ_TARGETS:-"json_paths avro_payloads"}
root=$PWD/.tools/cargo-fuzz
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
  echo "fuzz: installing the nightly toolchain (cargo-fuzz needs it)" >&2
  rustup toolchain install nightly --profile minimal
fi
if [ ! -x "$root/bin/cargo-fuzz" ]; then
  echo "fuzz: installing cargo-fuzz into .tools/cargo-fuzz" >&2
  cargo install cargo-fuzz --locked --version 0.13.2 --root "$root"
fi
export PATH=$root/bin:$PATH
for t in $targets; do
  # New inputs the fuzzer finds go to .tools/ (not into the repository); the committed seeds
  # and regressions in fuzz/corpus/ are read every run.
  work=.tools/fuzz-corpus/$t
  mkdir -p "$work"
  echo "fuzz: $t for ${seconds}s" >&2
  cargo +nightly fuzz run --sanitizer none "$t" "$work" "fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1
done
