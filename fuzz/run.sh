#!/usr/bin/env bash
# Builds the cargo-fuzz targets (nightly) and runs each for FUZZ_SECONDS (default 60) from the
# checked-in seeds plus a scratch corpus in target/fuzz-corpus/; fails on the first crash, whose
# input lands in fuzz/artifacts/<target>/. Installs cargo-fuzz when missing.
set -euo pipefail
cd "$(dirname "$0")"
seconds=${FUZZ_SECONDS:-60}
if ! cargo +nightly --version >/dev/null 2>&1; then
  # cargo fuzz needs nightly (-Z sanitizer); a machine without it cannot fuzz, and says so.
  echo "fuzz: SKIPPED: no nightly toolchain on this machine (rustup toolchain list)" >&2
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install --locked cargo-fuzz
fi
started=$SECONDS
cargo +nightly fuzz build -O
echo "-- fuzz build took $((SECONDS - started)) s"
for target in $(cargo +nightly fuzz list); do
  corpus="target/fuzz-corpus/$target"
  mkdir -p "$corpus"
  started=$SECONDS
  cargo +nightly fuzz run -O "$target" "$corpus" "seeds/$target" -- \
    -max_total_time="$seconds" -print_final_stats=1 2>&1 |
    grep -E 'stat::number_of_executed_units|stat::peak_rss|cov: |Done|panicked|SUMMARY|ERROR' | tail -4
  echo "-- fuzz $target took $((SECONDS - started)) s"
done
