#!/usr/bin/env bash
# Browser end-to-end test: noVNC (npm) in Debian's Chromium, through the real ws-proxy binary,
# to kubevirt-sim's console and to QEMU's VNC server. Installs what is missing (Debian/Ubuntu
# packages only when their binaries are absent; never a downloaded browser), builds the Rust
# binaries and runs `npm test`. Screenshots and process logs land in e2e/artifacts/.
set -euo pipefail
cd "$(dirname "$0")"
E2E_DIR=$(pwd)
REPO_DIR=$(cd .. && pwd)

# Debian packages the test needs, by the binary each one provides.
# shellcheck source=../scripts/ensure-packages.sh
source "$REPO_DIR/scripts/ensure-packages.sh"
ensure_packages "${CHROMIUM_BIN:-/usr/bin/chromium}=chromium" \
  /usr/bin/qemu-system-x86_64=qemu-system-x86 node=nodejs npm=npm openssl=openssl \
  /usr/sbin/nginx=nginx-light

node_major=$(node -p 'process.versions.node.split(".")[0]')
if ((node_major < 20)); then
  echo "e2e needs Node.js 20 or newer (found $(node --version))" >&2
  exit 1
fi

echo "== npm ci (noVNC, playwright-core)"
PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund

echo "== cargo build -p proxy-server -p kubevirt-sim --bins"
(cd "$REPO_DIR" && cargo build -p proxy-server -p kubevirt-sim --bins)
target_dir=$(cd "$REPO_DIR" && cargo metadata --format-version 1 --no-deps |
  node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).target_directory))')
export WS_PROXY_BIN="$target_dir/debug/ws-proxy"
export KUBEVIRT_SIM_BIN="$target_dir/debug/kubevirt-sim"

echo "== npm test (screenshots and logs in $E2E_DIR/artifacts/)"
rm -rf "$E2E_DIR/artifacts"
npm test
