# syntax=docker/dockerfile:1
# The ws-proxy image: the `ws-proxy` binary on a base without a shell or a package manager,
# running as a numeric non-root user. Configured through the environment, exactly like the
# Python lab-orchestrator-ws-proxy image (SECRET_KEY, LOCAL_DEV_MODE, HOST, PORT,
# HOST_PATH_PREFIX, KUBERNETES_SERVICE_*, WS_REMOTE_URL, LOGLEVEL) plus the WS_PROXY_* settings
# (docs/configuration.md).
#
#   podman build -t ws-proxy .        (or docker build)
#
# The build arguments name the images, so a builder with its own mirror or without registry
# access can use its own (docs/deployment.md says exactly what CI builds with):
#   RUST_IMAGE     the toolchain that compiles the binary (cargo and a C compiler on PATH)
#   RUNTIME_IMAGE  the base of the final image (glibc and libgcc, as distroless `cc` has)

ARG RUST_IMAGE=docker.io/library/rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# The caches speed up rebuilds (BuildKit and buildah); the binary leaves the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p proxy-server --bin ws-proxy \
    && install -D -m 0755 target/release/ws-proxy /out/ws-proxy

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ws-proxy" \
      org.opencontainers.image.description="JWT-authenticated WebSocket proxy for KubeVirt VNC consoles (drop-in for lab-orchestrator-ws-proxy)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MPL-2.0" \
      org.opencontainers.image.source="https://example.invalid/ws-proxy"
COPY --from=build /out/ws-proxy /usr/local/bin/ws-proxy
# distroless' `nonroot`; any UID works (the binary writes nothing to disk).
USER 65532:65532
ENV HOST=0.0.0.0 \
    PORT=5001
EXPOSE 5001
ENTRYPOINT ["/usr/local/bin/ws-proxy"]
