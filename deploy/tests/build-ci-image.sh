#!/usr/bin/env bash
# Builds the root Dockerfile where no image registry is reachable (CI, these machines):
#   - RUNTIME_IMAGE: a base made from Debian bookworm's own packages, with what distroless
#     `cc-debian12:nonroot` has (glibc, libgcc, CA certificates, netbase, tzdata, the `nonroot`
#     user 65532) and, like it, no shell and no package manager;
#   - BINARY_FROM: an image holding only /out/ws-proxy, the release binary built on this machine,
#     so the Dockerfile's `build` stage (the Rust image) is skipped.
# Everything after that is the Dockerfile's own final stage, as users build it.
# Usage: build-ci-image.sh PATH/TO/ws-proxy TAG
set -euo pipefail
binary=$1
tag=$2
repo_dir=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/debs" "$work/rootfs" "$work/binary/out"
download() { (cd "$work/debs" && apt-get download libc6 libgcc-s1 netbase tzdata 2>/dev/null); }
if ! download; then
  # Stale package lists name versions the mirror no longer has.
  if [[ $(id -u) -ne 0 ]]; then sudo apt-get update; else apt-get update; fi
  download
fi
for deb in "$work"/debs/*.deb; do
  dpkg-deb -x "$deb" "$work/rootfs"
done
rootfs=$work/rootfs
rm -rf "$rootfs/usr/share/doc" "$rootfs/usr/share/lintian" "$rootfs/usr/share/man"
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/nonroot"
chmod 1777 "$rootfs/tmp"
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
chown 65532:65532 "$rootfs/home/nonroot"
for forbidden in bin/sh bin/bash usr/bin/dpkg usr/bin/apt-get; do
  if [[ -e "$rootfs/$forbidden" ]]; then
    echo "the CI base has /$forbidden" >&2
    exit 1
  fi
done
tar -C "$rootfs" --numeric-owner -c . | podman import --quiet - localhost/ws-proxy-ci-base:bookworm >/dev/null

install -m 0755 "$binary" "$work/binary/out/ws-proxy"
tar -C "$work/binary" --numeric-owner -c . | podman import --quiet - localhost/ws-proxy-ci-binary:latest >/dev/null

revision=$(git -C "$repo_dir" rev-parse HEAD 2>/dev/null || echo unknown)
podman build --quiet --pull=never \
  --build-arg RUNTIME_IMAGE=localhost/ws-proxy-ci-base:bookworm \
  --build-arg BINARY_FROM=localhost/ws-proxy-ci-binary:latest \
  --build-arg REVISION="$revision" \
  --tag "$tag" "$repo_dir" >/dev/null
echo "built $tag from $repo_dir/Dockerfile (base: Debian packages; binary: $binary)"
