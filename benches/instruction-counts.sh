#!/usr/bin/env bash
# Instruction counts of ws-proxy against the byte relay under valgrind's callgrind: per session
# set-up and per MiB each way in 1 KiB and 64 KiB messages (see crates/loadgen/src/counts.rs).
# A report, never a pass/fail threshold: it fails only when it cannot count.
#
#   benches/instruction-counts.sh            # the published sizes (a few minutes)
#   benches/instruction-counts.sh --quick    # CI's report (under a minute once built)
#
# Extra arguments go to the instruction-counts binary (--markdown FILE, --json FILE, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../scripts/ensure-packages.sh
source scripts/ensure-packages.sh
ensure_packages valgrind=valgrind
cargo build --release -p proxy-server -p loadgen
target/release/instruction-counts --proxy-bin target/release/ws-proxy "$@"
