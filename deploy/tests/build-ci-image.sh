#!/usr/bin/env bash
# Builds the root Dockerfile, unchanged, where no image registry is reachable (CI, these
# machines), by giving its two build arguments local images made from Debian's own packages:
#   - RUST_IMAGE: Debian bookworm minbase (debootstrap) with gcc and libc6-dev, and the machine's
#     Rust toolchain mounted read-only at /usr/local/rust for the build (no toolchain can be
#     downloaded here); cargo fetches the crates from crates.io as in any build;
#   - RUNTIME_IMAGE: a base holding what distroless `cc-debian12:nonroot` holds (glibc, libgcc,
#     netbase, tzdata, Debian's CA certificates, the `nonroot` user 65532), unpacked from
#     Debian's packages, and like it without a shell or a package manager.
# Usage: build-ci-image.sh TAG WORK_DIR
set -euo pipefail
tag=$1
work=$2
repo_dir=$(cd "$(dirname "$0")/../.." && pwd)
mkdir -p "$work"
as_root=()
if [[ $(id -u) -ne 0 ]]; then
  as_root=(sudo)
fi
mirror=http://deb.debian.org/debian

# The stand-in for the Rust image.
if ! podman image exists localhost/ws-proxy-ci-rust:bookworm; then
  rm -rf "$work/minbase" "$work/rust-image"
  "${as_root[@]}" debootstrap --variant=minbase bookworm "$work/minbase" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; exit 1; }
  "${as_root[@]}" tar -C "$work/minbase" --numeric-owner -c . |
    podman import --quiet - localhost/ws-proxy-ci-debian:bookworm-minbase >/dev/null
  mkdir -p "$work/rust-image"
  # The machine's CA bundle: crates.io may be reached through a TLS-inspecting proxy whose CA
  # only the machine trusts. It stays in this build-only image, not in the runtime base.
  cp /etc/ssl/certs/ca-certificates.crt "$work/rust-image/machine-ca-certificates.crt"
  cat >"$work/rust-image/Containerfile" <<'EOF'
FROM localhost/ws-proxy-ci-debian:bookworm-minbase
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY machine-ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
EOF
  podman build --quiet --runtime runc --network host --pull=never \
    --tag localhost/ws-proxy-ci-rust:bookworm "$work/rust-image" >/dev/null
fi

# The stand-in for distroless cc.
rm -rf "$work/debs" "$work/rootfs"
mkdir -p "$work/debs" "$work/rootfs"
download() { (cd "$work/debs" && apt-get download libc6 libgcc-s1 netbase tzdata ca-certificates 2>/dev/null); }
if ! download; then
  # Stale package lists name versions the mirror no longer has.
  "${as_root[@]}" apt-get update
  download
fi
rootfs=$work/rootfs
for deb in "$work"/debs/*.deb; do
  dpkg-deb -x "$deb" "$rootfs"
done
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/home/nonroot"
cat "$rootfs"/usr/share/ca-certificates/mozilla/*.crt >"$rootfs/etc/ssl/certs/ca-certificates.crt"
rm -rf "$rootfs/usr/share/ca-certificates" "$rootfs/usr/sbin/update-ca-certificates" \
  "$rootfs/usr/share/doc" "$rootfs/usr/share/lintian" "$rootfs/usr/share/man"
chmod 1777 "$rootfs/tmp"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n' >"$rootfs/etc/group"
"${as_root[@]}" chown 65532:65532 "$rootfs/home/nonroot"
for forbidden in bin/sh bin/bash usr/bin/dpkg usr/bin/apt-get; do
  if [[ -e "$rootfs/$forbidden" ]]; then
    echo "the CI runtime base has /$forbidden" >&2
    exit 1
  fi
done
"${as_root[@]}" tar -C "$rootfs" --numeric-owner -c . |
  podman import --quiet - localhost/ws-proxy-ci-base:bookworm >/dev/null

toolchain=$(rustc --print sysroot)
revision=$(git -C "$repo_dir" rev-parse HEAD 2>/dev/null || echo unknown)
podman build --runtime runc --network host --pull=never \
  --volume "$toolchain:/usr/local/rust:ro" \
  --build-arg RUST_IMAGE=localhost/ws-proxy-ci-rust:bookworm \
  --build-arg RUNTIME_IMAGE=localhost/ws-proxy-ci-base:bookworm \
  --build-arg REVISION="$revision" \
  --tag "$tag" "$repo_dir" >"$work/podman-build.log" 2>&1 ||
  { tail -30 "$work/podman-build.log" >&2; exit 1; }
grep -E 'Finished|Successfully tagged' "$work/podman-build.log"
echo "built $tag from $repo_dir/Dockerfile (Rust: $toolchain in Debian minbase; runtime: Debian packages)"
