#!/usr/bin/env bash
# Network fault injection through the real ws-proxy binary (crates/proxy-server/tests/faults.rs):
# blackholes in network namespaces the tests create (ip netns, veth, iptables; needs root, as CI
# has), a slow, delayed and paused link through the tests' own impairment relay (the kernel here
# has no netem), resets, a killed upstream, rotated credentials, a stalled reader, descriptor
# exhaustion and SIGTERM with 500 sessions. Installs iproute2 and iptables when missing.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

if [[ $(id -u) -ne 0 ]]; then
  echo "faults/test.sh needs root (network namespaces and iptables rules); run it with sudo" >&2
  exit 1
fi
# shellcheck source=../scripts/ensure-packages.sh
source scripts/ensure-packages.sh
ensure_packages ip=iproute2 iptables=iptables ss=iproute2 prlimit=util-linux

echo "== cargo build -p kubevirt-sim (the upstream the process-level faults kill and restart)"
cargo build -p kubevirt-sim --bin kubevirt-sim
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export KUBEVIRT_SIM_BIN="$target_dir/debug/kubevirt-sim"

echo "== fault-injection tests (one at a time: they measure the proxy's memory and CPU)"
cargo test -p proxy-server --test faults -- --include-ignored --test-threads=1 --show-output
echo "== faults/test.sh took $((SECONDS - started)) s"
