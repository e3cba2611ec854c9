//! The ws-proxy server: what users run. A JWT-authenticated WebSocket proxy for KubeVirt VNC
//! consoles and a drop-in for the Python `lab-orchestrator-ws-proxy` library and image.
//!
//! A browser (noVNC) opens `ws://proxy/{token}/{vmi}` (or `/{prefix}/{token}/{vmi}` with a
//! `host_path_prefix`). The proxy parses the path, verifies the token and that it allows the VM
//! ([`proxy_auth`]), dials the VM's VNC subresource on the Kubernetes API server
//! ([`proxy_upstream`]), and only then answers the client's upgrade; frames are relayed both ways
//! by [`proxy_core::relay`] until either side closes, and the other side is closed too.
//!
//! # APIs, one engine
//!
//! - [`WebsocketProxy::new`], [`run`](WebsocketProxy::run),
//!   [`run_in_thread`](WebsocketProxy::run_in_thread), [`stop_thread`](WebsocketProxy::stop_thread):
//!   the Python class, same parameters and meanings.
//! - [`WebsocketProxy::builder`]: every setting (keys, upstream, limits, timers, reject style).
//! - [`WebsocketProxy::serve`] / [`ProxyEngine::serve`]: async, on a listener you bound, until a
//!   shutdown future resolves, then a graceful drain.
//! - [`ProxyEngine`] is generic over the token verifier and the upstream connector, so tests and
//!   embedders can plug in their own.
//!
//! # Refusals
//!
//! Before the upgrade, with an HTTP status and a one-line `text/plain` reason ([`Rejection`]):
//! bad path 404, not a WebSocket upgrade 400, invalid token 401, VM not in the token 403, VM
//! not found 404, VM not running 409, upstream unreachable 502, upstream timeout 504, draining
//! or at capacity 503. That is how [`RejectStyle::Auto`] (the default) answers clients without an
//! `Origin` header; browsers, which cannot read the status of a failed upgrade, get the Python
//! original's behaviour instead ([`RejectStyle::CloseFrame`], also selectable for everybody):
//! upgrade, then close with `4000 + status` and the original's reasons.
//!
//! # Operations
//!
//! `/healthz`, `/readyz` and `/metrics` (Prometheus text, [`ProxyMetrics`]) are served on the
//! main port or a separate admin listener ([`ProxyEngine::serve_admin`]). One `tracing` span per
//! session carries the session id, peer, user, lab instance, namespace and VM; the token is
//! never logged (paths are logged through [`redact_target`]). The `ws-proxy` binary ([`cli`])
//! reads the Python image's environment; see `docs/configuration.md` and `docs/operations.md`.
//! The demo (a simulated KubeVirt behind the proxy) is its own binary, `ws-proxy-demo`, so this
//! crate carries no test tooling.
//!
//! # One dependency
//!
//! The crates below are re-exported ([`proxy_auth`], [`proxy_core`], [`proxy_upstream`],
//! [`proxy_wire`], [`proxy_control`], [`proxy_share`], [`proxy_console`], [`proxy_keys`]) with the types an embedder names most ([`Verifier`], [`KubeVirtConnector`],
//! [`RelayConfig`], ...), so `proxy-server` alone builds and runs a proxy from Rust:
//!
//! ```no_run
//! use proxy_server::{
//!     KubeVirtConnectorBuilder, ProxyEngine, ServerConfig, Verifier, WebsocketProxy, WireLimits,
//! };
//!
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! // The facade with an in-cluster connector whose upstream messages are capped at 1 MiB ...
//! let upstream = KubeVirtConnectorBuilder::in_cluster()?.limits(WireLimits::max_message(1 << 20));
//! let proxy = WebsocketProxy::builder()
//!     .verifier(Verifier::hs256("my-secret")?)
//!     .upstream(upstream)
//!     .build()?;
//! # drop(proxy);
//! // ... or the engine itself, with any verifier and connector behind its two seams.
//! let engine = ProxyEngine::new(
//!     Verifier::hs256("my-secret")?,
//!     KubeVirtConnectorBuilder::local_dev().build()?,
//!     ServerConfig::default(),
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:5001").await?;
//! engine.serve(listener, proxy_server::shutdown_signal()).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Example
//!
//! ```no_run
//! use proxy_server::WebsocketProxy;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Dev mode: plain ws:// to `kubectl proxy` on localhost:8001.
//! let proxy = WebsocketProxy::new(
//!     "ws://localhost:8001",
//!     "/apis/subresources.kubevirt.io/v1alpha3/namespaces/{namespace}/virtualmachineinstances/{vmi_name}/vnc",
//!     true,
//!     "my-secret",
//!     Some("ws_proxy"),
//! )?;
//! let address = proxy.run_in_thread("127.0.0.1", 0)?;
//! println!("consoles at ws://{address}/ws_proxy/{{token}}/{{vmi}}");
//! proxy.stop_thread()?;
//! # Ok(())
//! # }
//! ```
//!
//! The async form, with the builder:
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use proxy_server::{RejectStyle, WebsocketProxy, shutdown_signal};
//!
//! # async fn serve() -> Result<(), Box<dyn std::error::Error>> {
//! let proxy = WebsocketProxy::builder()
//!     .secret_key("my-secret")
//!     .local_dev_mode(true)
//!     .reject_style(RejectStyle::CloseFrame)
//!     .drain_timeout(Duration::from_secs(10))
//!     .build()?;
//! let listener = tokio::net::TcpListener::bind("0.0.0.0:5001").await?;
//! proxy.serve(listener, shutdown_signal()).await;
//! # Ok(())
//! # }
//! ```
pub mod admin_api;
pub mod cli;
mod config;
mod engine;
mod facade;
mod http;
pub mod logging;
mod metrics;
mod path;
mod reject;
mod runtime;
mod signal;
pub mod token_source;

pub use config::{Limits, OriginAllowList, ServerConfig};
pub use engine::ProxyEngine;
pub use facade::{
    BuildError, KubeVirtProxyEngine, RunError, WebsocketProxy, WebsocketProxyBuilder,
};
pub use metrics::ProxyMetrics;
pub use path::{
    ConsolePath, ConsoleTarget, PathError, PathPrefix, parse_console_path, parse_console_target,
    redact_target,
};
pub use reject::{RejectStyle, Rejection};
pub use runtime::build_runtime;
pub use signal::shutdown_signal;

// What an embedder needs besides the facade, so that one dependency on this crate suffices.
pub use proxy_auth::{self, LabInstance, TokenVerifier, Verifier};
pub use proxy_console::{self, RecordSessions, RecordingConfig};
pub use proxy_control::{self, StateStore, StorePolicy};
pub use proxy_core::{self, RelayConfig};
pub use proxy_keys::{self, AdminToken, JwksFetchError, JwksUrl, JwksUrlError, KeyRing, ServerTls};
pub use proxy_share::{self, ShareConfig};
pub use proxy_upstream::{self, Connector, KubeVirtConnector, KubeVirtConnectorBuilder};
pub use proxy_wire::{self, WireLimits};
