#!/usr/bin/env bash
# The operators' side against real components: the state store's contract (proxy-control) and
# the shared-store tests through the binary (proxy-server) with a real `redis-server` (the Debian package; installed when missing; each test starts and stops its
# own on a loopback port), and the admin API's OpenAPI contract checked by schemathesis (PyPI,
# in a venv under target/) against the real ws-proxy binary with sessions open.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$SECONDS

# shellcheck source=../scripts/ensure-packages.sh
source scripts/ensure-packages.sh
ensure_packages redis-server=redis-server

echo "== shared-store tests with a real redis-server ($(redis-server --version | cut -d' ' -f3))"
cargo test -p proxy-control --test state_store -- --include-ignored --show-output
cargo test -p proxy-server --test shared_store -- --include-ignored --show-output

echo "== the admin API against its OpenAPI document (schemathesis)"
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
venv="$target_dir/admin/venv"
if [[ ! -x "$venv/bin/schemathesis" ]]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r admin/requirements.txt
fi
cargo build -p proxy-server -p kubevirt-sim --bins
"$venv/bin/python" admin/contract.py --ws-proxy "$target_dir/debug/ws-proxy" \
  --kubevirt-sim "$target_dir/debug/kubevirt-sim" --schemathesis "$venv/bin/schemathesis"
echo "== admin/test.sh took $((SECONDS - started)) s"
