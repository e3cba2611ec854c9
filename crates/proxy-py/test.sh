#!/usr/bin/env bash
# The Python package's tests: builds the wheel with maturin (pip's PEP 517 build), installs it
# with pytest and the original lab-orchestrator-ws-proxy 1.0.0 application (--no-deps: it runs
# on this wheel's compatibility package) into target/python/venv, builds kubevirt-sim and
# ws-proxy, and runs tests/ with pytest.
set -euo pipefail
cd "$(dirname "$0")"
CRATE_DIR=$(pwd)
REPO_DIR=$(cd ../.. && pwd)
VENV="$REPO_DIR/target/python/venv"
started=$SECONDS

if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$CRATE_DIR/tests/requirements.txt"
echo "== python: building and installing the wheel"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --force-reinstall --no-deps "$CRATE_DIR"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps lab-orchestrator-ws-proxy==1.0.0
echo "-- took $((SECONDS - started)) s"

(cd "$REPO_DIR" && cargo build --locked -p proxy-server -p kubevirt-sim --bins)
target_dir=$(cd "$REPO_DIR" && cargo metadata --format-version 1 --no-deps |
  "$VENV/bin/python" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
export WS_PROXY_BIN="$target_dir/debug/ws-proxy"
export KUBEVIRT_SIM_BIN="$target_dir/debug/kubevirt-sim"

echo "== python: pytest"
cd "$REPO_DIR"
"$VENV/bin/python" -m pytest -q "$CRATE_DIR/tests"
echo "-- python: took $((SECONDS - started)) s"
