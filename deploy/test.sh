#!/usr/bin/env bash
# Tests what an operator deploys (docs/deployment.md): lints the Dockerfile, renders every
# kustomization and validates it against the Kubernetes schemas, builds the image the way CI can
# (no registry: stand-ins for its two base images made from Debian's packages), checks the image
# and the manifests against the binary in it, and runs it in the in-cluster shape against
# kubevirt-sim for each rendered Deployment (deploy/tests/smoke.py). Installs what is missing:
# Debian's podman, runc, debootstrap and kubectl (kubernetes-client) when absent, and the Python
# tools in target/deploy/venv.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO_DIR=$(pwd)
OUT="$REPO_DIR/target/deploy"
mkdir -p "$OUT"

step_started=$SECONDS
step() {
  echo "== deploy: $1"
  step_started=$SECONDS
}
step_done() {
  echo "-- took $((SECONDS - step_started)) s"
}

sudo=()
if [[ $(id -u) -ne 0 ]]; then
  sudo=(sudo)
fi

step "tools"
# shellcheck source=../scripts/ensure-packages.sh
source scripts/ensure-packages.sh
ensure_packages podman=podman runc=runc kubectl=kubernetes-client debootstrap=debootstrap
if ! kubectl kustomize --help >/dev/null 2>&1; then
  echo "kubectl has no kustomize; install kubectl 1.27 or newer" >&2
  exit 1
fi
if [[ ! -x "$OUT/venv/bin/python" ]]; then
  python3 -m venv "$OUT/venv"
fi
"$OUT/venv/bin/pip" install --quiet --disable-pip-version-check \
  -r "$REPO_DIR/deploy/tests/requirements.txt"
PYTHON="$OUT/venv/bin/python"
step_done

step "hadolint Dockerfile"
"$OUT/venv/bin/hadolint" --config "$REPO_DIR/deploy/tests/hadolint.yaml" Dockerfile
step_done

step "render and validate the manifests"
rm -rf "$OUT/rendered"
mkdir -p "$OUT/rendered"
rendered=()
for kustomization in deploy/base deploy/overlays/*/; do
  name=$(basename "$kustomization")
  kubectl kustomize "$kustomization" >"$OUT/rendered/$name.yaml"
  rendered+=("$OUT/rendered/$name.yaml")
done
# The Prometheus Operator's ServiceMonitor has no built-in schema; check_manifests checks it
# against the Service it selects.
"$OUT/venv/bin/kubernetes-validate" --strict --quiet "${rendered[@]}"
echo "kubernetes-validate: ${#rendered[@]} renderings pass"
step_done

step "build the image (CI arrangement: local stand-ins for the two base images, nothing pulled)"
"$REPO_DIR/deploy/tests/build-ci-image.sh" localhost/ws-proxy:ci "$OUT/image"
# The binary as the image holds it, for the manifest checks.
rm -f "$OUT/ws-proxy"
container=$(podman create localhost/ws-proxy:ci)
podman cp "$container:/usr/local/bin/ws-proxy" "$OUT/ws-proxy"
podman rm "$container" >/dev/null
"$PYTHON" deploy/tests/check_manifests.py --binary "$OUT/ws-proxy" "${rendered[@]}"
step_done

step "build kubevirt-sim (the API server of the smoke test)"
cargo build --locked -p kubevirt-sim --bin kubevirt-sim
target_dir=$(cargo metadata --format-version 1 --no-deps | "$PYTHON" -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
KUBEVIRT_SIM_BIN="$target_dir/debug/kubevirt-sim"
step_done

step "check the image"
inspect() { podman image inspect --format "$1" localhost/ws-proxy:ci; }
[[ $(inspect '{{.Config.User}}') == "65532:65532" ]] || { echo "the image does not run as 65532:65532" >&2; exit 1; }
[[ $(inspect '{{json .Config.Entrypoint}}') == '["/usr/local/bin/ws-proxy"]' ]] || { echo "the entrypoint is not ws-proxy" >&2; exit 1; }
inspect '{{json .Config.ExposedPorts}}' | grep -q '5001/tcp' || { echo "5001 is not exposed" >&2; exit 1; }
inspect '{{index .Config.Labels "org.opencontainers.image.title"}}' | grep -qx ws-proxy || { echo "no OCI title label" >&2; exit 1; }
for shell in /bin/sh /bin/bash /usr/bin/apt-get /usr/bin/dpkg; do
  if podman --runtime runc run --rm --network host --entrypoint "$shell" localhost/ws-proxy:ci -c true >/dev/null 2>&1; then
    echo "the image has $shell" >&2
    exit 1
  fi
done
podman --runtime runc run --rm --network host --read-only --cap-drop ALL \
  --ulimit nofile=20000:20000 --ulimit nproc=4096:4096 localhost/ws-proxy:ci --version
size=$(inspect '{{.Size}}')
echo "image localhost/ws-proxy:ci: $((size / 1000 / 1000)) MB ($size bytes), user 65532, no shell, no package manager"
step_done

for kustomization in base ingress-prefix admin-port recordings; do
  step "smoke test of the container as deploy/$kustomization renders it"
  "$PYTHON" deploy/tests/smoke.py --image localhost/ws-proxy:ci \
    --rendered "$OUT/rendered/$kustomization.yaml" --simulator "$KUBEVIRT_SIM_BIN"
  step_done
done
echo "== deploy: all checks passed"
