//! [`WebsocketProxy`]: the Python original's class, its builder and the async API, all on one
//! [`ProxyEngine`].
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use proxy_auth::Verifier;
use proxy_core::RelayConfig;
use proxy_upstream::{
    KubeVirtConnector, KubeVirtConnectorBuilder, SERVICE_ACCOUNT_CA_PATH,
    SERVICE_ACCOUNT_TOKEN_PATH,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use proxy_keys::{KeyRing, ServerTls};

use crate::config::{Limits, ServerConfig};
use crate::engine::ProxyEngine;
use crate::metrics::ProxyMetrics;
use crate::path::PathPrefix;
use crate::reject::RejectStyle;
use crate::signal::shutdown_signal;

/// Why a [`WebsocketProxy`] could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Neither a secret key nor a verifier was given.
    #[error("no token key: set a secret key or a verifier")]
    NoTokenKey,
    /// The token verifier rejected its keys or algorithms.
    #[error("invalid token verification settings")]
    Verifier(#[source] proxy_auth::ConfigError),
    /// The upstream connector rejected its settings.
    #[error("invalid upstream settings")]
    Upstream(#[source] proxy_upstream::BuildError),
}

/// Why running or stopping a [`WebsocketProxy`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The listen address could not be bound.
    #[error("cannot listen on {address}")]
    Bind {
        /// The `host:port` that was asked for.
        address: String,
        /// Why binding failed.
        #[source]
        source: std::io::Error,
    },
    /// The tokio runtime could not be started.
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    /// [`WebsocketProxy::run_in_thread`] was called while a server thread is running.
    #[error("the proxy is already running in a thread (call stop_thread first)")]
    AlreadyRunning,
    /// The server thread panicked.
    #[error("the server thread panicked")]
    ThreadPanicked,
}

/// The engine with the real seams: a [`KeyRing`] of `proxy-auth` keys and the KubeVirt connector.
pub type KubeVirtProxyEngine = ProxyEngine<KeyRing, KubeVirtConnector>;

/// The JWT-authenticated WebSocket proxy for KubeVirt VNC consoles: a drop-in for the Python
/// `lab_orchestrator_ws_proxy.WebsocketProxy`.
///
/// Three ways to run it share one engine: [`run`](Self::run) (foreground, until SIGTERM or
/// Ctrl-C), [`run_in_thread`](Self::run_in_thread) / [`stop_thread`](Self::stop_thread)
/// (background thread), and [`serve`](Self::serve) (async, on a listener you bound).
/// Dropping the proxy stops its background thread as [`stop_thread`](Self::stop_thread) does.
pub struct WebsocketProxy {
    engine: KubeVirtProxyEngine,
    thread: Mutex<Option<ServerThread>>,
}

struct ServerThread {
    local_addr: SocketAddr,
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl fmt::Debug for WebsocketProxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebsocketProxy")
            .field("engine", &self.engine)
            .field("thread_local_addr", &self.local_addr())
            .finish()
    }
}

impl WebsocketProxy {
    /// The Python constructor, same parameters and meanings.
    ///
    /// - `remote_url`: the API server, e.g. `wss://10.0.0.1:443` in cluster or
    ///   `ws://localhost:8001` (`kubectl proxy`) in dev mode.
    /// - `api_path`: the VNC subresource template with `{namespace}` and `{vmi_name}`.
    /// - `local_dev_mode`: plain `ws://` without credentials; otherwise TLS with the pod's
    ///   service-account CA and bearer token.
    /// - `secret_key`: the HS256 secret tokens are signed with.
    /// - `host_path_prefix`: URLs become `/{prefix}/{token}/{vmi}` (slashes optional).
    pub fn new(
        remote_url: &str,
        api_path: &str,
        local_dev_mode: bool,
        secret_key: &str,
        host_path_prefix: Option<&str>,
    ) -> Result<Self, BuildError> {
        let mut builder = Self::builder()
            .remote_url(remote_url)
            .api_path(api_path)
            .local_dev_mode(local_dev_mode)
            .secret_key(secret_key);
        if let Some(prefix) = host_path_prefix {
            builder = builder.host_path_prefix(prefix);
        }
        builder.build()
    }

    /// A builder for every setting.
    pub fn builder() -> WebsocketProxyBuilder {
        WebsocketProxyBuilder::default()
    }

    /// The engine behind this proxy (metrics, readiness, settings).
    pub fn engine(&self) -> &KubeVirtProxyEngine {
        &self.engine
    }

    /// The proxy's metrics.
    pub fn metrics(&self) -> &ProxyMetrics {
        self.engine.metrics()
    }

    /// Serves on `listener` until `shutdown` resolves, then drains (see [`ProxyEngine::serve`]).
    pub async fn serve<F>(&self, listener: TcpListener, shutdown: F)
    where
        F: Future<Output = ()> + Send,
    {
        self.engine.serve(listener, shutdown).await;
    }

    /// Listens on `host:port` and serves in the foreground until SIGTERM or Ctrl-C, then drains
    /// and returns.
    pub fn run(&self, host: &str, port: u16) -> Result<(), RunError> {
        let listener = bind(host, port)?;
        let runtime = runtime()?;
        let listener = {
            let _context = runtime.enter();
            TcpListener::from_std(listener).map_err(|source| RunError::Bind {
                address: format!("{host}:{port}"),
                source,
            })?
        };
        runtime.block_on(self.engine.serve(listener, shutdown_signal()));
        Ok(())
    }

    /// Starts serving `host:port` on a background thread and returns the bound address once the
    /// socket is listening (connections made after this returns are served). Port 0 picks a free
    /// port.
    pub fn run_in_thread(&self, host: &str, port: u16) -> Result<SocketAddr, RunError> {
        let mut thread = self.lock_thread();
        if thread.is_some() {
            return Err(RunError::AlreadyRunning);
        }
        let address = format!("{host}:{port}");
        let bind_error = |source| RunError::Bind {
            address: address.clone(),
            source,
        };
        let listener = bind(host, port)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        let runtime = runtime()?;
        let listener = {
            let _context = runtime.enter();
            TcpListener::from_std(listener).map_err(bind_error)?
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let engine = self.engine.clone();
        let handle = std::thread::Builder::new()
            .name("ws-proxy".to_owned())
            .spawn(move || {
                runtime.block_on(engine.serve(listener, async {
                    // A dropped sender (proxy dropped) stops the server as well.
                    let _ = stopped.await;
                }));
            })
            .map_err(RunError::Runtime)?;
        *thread = Some(ServerThread {
            local_addr,
            stop,
            handle,
        });
        Ok(local_addr)
    }

    /// The address the background thread listens on, while it runs.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.lock_thread().as_ref().map(|thread| thread.local_addr)
    }

    /// Stops the background thread gracefully (drain, then 1001 for sessions still open after
    /// the drain timeout) and joins it. Does nothing when no thread runs; safe to call twice.
    pub fn stop_thread(&self) -> Result<(), RunError> {
        let Some(thread) = self.lock_thread().take() else {
            return Ok(());
        };
        let _ = thread.stop.send(());
        thread.handle.join().map_err(|_| RunError::ThreadPanicked)
    }

    fn lock_thread(&self) -> MutexGuard<'_, Option<ServerThread>> {
        self.thread.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for WebsocketProxy {
    fn drop(&mut self) {
        let _ = self.stop_thread();
    }
}

fn bind(host: &str, port: u16) -> Result<std::net::TcpListener, RunError> {
    bind_shown((host, port), format!("{host}:{port}"))
}

/// Binds `address` non-blocking, for a runtime to take over; an error names it as `shown`.
pub(crate) fn bind_shown(
    address: impl std::net::ToSocketAddrs,
    shown: String,
) -> Result<std::net::TcpListener, RunError> {
    let bind_error = |source| RunError::Bind {
        address: shown.clone(),
        source,
    };
    let listener = std::net::TcpListener::bind(address).map_err(bind_error)?;
    listener.set_nonblocking(true).map_err(bind_error)?;
    Ok(listener)
}

fn runtime() -> Result<tokio::runtime::Runtime, RunError> {
    crate::runtime::build_runtime().map_err(RunError::Runtime)
}

/// Builds a [`WebsocketProxy`] with every setting. Only a token key is required.
#[derive(Default)]
#[must_use]
pub struct WebsocketProxyBuilder {
    secret_key: Option<String>,
    verifier: Option<KeyRing>,
    local_dev_mode: bool,
    remote_url: Option<String>,
    api_path: Option<String>,
    upstream: Option<KubeVirtConnectorBuilder>,
    server: ServerConfig,
}

impl fmt::Debug for WebsocketProxyBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebsocketProxyBuilder")
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("verifier", &self.verifier)
            .field("local_dev_mode", &self.local_dev_mode)
            .field("remote_url", &self.remote_url)
            .field("api_path", &self.api_path)
            .field("upstream", &self.upstream)
            .field("server", &self.server)
            .finish()
    }
}

impl WebsocketProxyBuilder {
    /// Verifies tokens with HS256 and this secret (the Python original's `secret_key`).
    pub fn secret_key(mut self, secret_key: impl Into<String>) -> Self {
        self.secret_key = Some(secret_key.into());
        self
    }

    /// Verifies tokens with this verifier (public keys, several algorithms, leeway, …);
    /// takes precedence over [`secret_key`](Self::secret_key).
    pub fn verifier(self, verifier: Verifier) -> Self {
        self.key_ring(KeyRing::fixed(verifier))
    }

    /// The token keys, re-read from their files as they change (see [`KeyRing`]).
    pub fn key_ring(mut self, verifier: KeyRing) -> Self {
        self.verifier = Some(verifier);
        self
    }

    /// Dev mode: plain `ws://` to `kubectl proxy`, no TLS, no bearer (default false).
    pub fn local_dev_mode(mut self, local_dev_mode: bool) -> Self {
        self.local_dev_mode = local_dev_mode;
        self
    }

    /// The API server's base URL. Default: `ws://localhost:8001` in dev mode,
    /// `wss://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT` in cluster.
    pub fn remote_url(mut self, remote_url: impl Into<String>) -> Self {
        self.remote_url = Some(remote_url.into());
        self
    }

    /// The VNC subresource path template (default: the `v1alpha3` path).
    pub fn api_path(mut self, api_path: impl Into<String>) -> Self {
        self.api_path = Some(api_path.into());
        self
    }

    /// Full control over the upstream connector (subprotocols, timeouts, credential files,
    /// WebSocket limits). Replaces `local_dev_mode` and `remote_url`; `api_path` still applies.
    pub fn upstream(mut self, connector: KubeVirtConnectorBuilder) -> Self {
        self.upstream = Some(connector);
        self
    }

    /// The Python original's `host_path_prefix`.
    pub fn host_path_prefix(mut self, prefix: &str) -> Self {
        self.server.path_prefix = PathPrefix::new(prefix);
        self
    }

    /// Serve `wss://` on the console port with this certificate, reloaded as its files change
    /// (default: plain `ws://`).
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.server.tls = Some(std::sync::Arc::new(tls));
        self
    }

    /// How refused requests are answered (default [`RejectStyle::Auto`]).
    pub fn reject_style(mut self, style: RejectStyle) -> Self {
        self.server.reject_style = style;
        self
    }

    /// Resource limits (handshake timeout, header size, sessions, message size).
    pub fn limits(mut self, limits: Limits) -> Self {
        self.server.limits = limits;
        self
    }

    /// Timers of each relayed session.
    pub fn relay(mut self, relay: RelayConfig) -> Self {
        self.server.relay = relay;
        self
    }

    /// How long sessions may continue after a stop request before being closed with 1001.
    pub fn drain_timeout(mut self, drain_timeout: Duration) -> Self {
        self.server.drain_timeout = drain_timeout;
        self
    }

    /// Whether `/healthz`, `/readyz` and `/metrics` are served on the main port (default true).
    pub fn admin_on_main_port(mut self, enabled: bool) -> Self {
        self.server.admin_on_main_port = enabled;
        self
    }

    /// Whether a live session is closed (4001 `token expired`) when its token expires (default false,
    /// like the Python original, which checks the token only when a session opens).
    pub fn close_on_token_expiry(mut self, enabled: bool) -> Self {
        self.server.close_on_token_expiry = enabled;
        self
    }

    /// Whether permessage-deflate is accepted when a browser offers it (default true, as the
    /// Python original).
    pub fn permessage_deflate(mut self, enabled: bool) -> Self {
        self.server.permessage_deflate = enabled;
        self
    }

    /// Replaces every front setting at once.
    pub fn server_config(mut self, config: ServerConfig) -> Self {
        self.server = config;
        self
    }

    /// Checks the settings, loads keys and credential files, and builds the proxy.
    pub fn build(self) -> Result<WebsocketProxy, BuildError> {
        let verifier = match (self.verifier, self.secret_key) {
            (Some(verifier), _) => verifier,
            (None, Some(secret)) => {
                KeyRing::fixed(Verifier::hs256(&secret).map_err(BuildError::Verifier)?)
            }
            (None, None) => return Err(BuildError::NoTokenKey),
        };
        let mut upstream = match (self.upstream, self.remote_url, self.local_dev_mode) {
            (Some(upstream), _, _) => upstream,
            (None, Some(url), true) => KubeVirtConnectorBuilder::local_dev().remote_url(url),
            (None, None, true) => KubeVirtConnectorBuilder::local_dev(),
            (None, Some(url), false) => KubeVirtConnectorBuilder::new(url)
                .bearer_token_file(SERVICE_ACCOUNT_TOKEN_PATH)
                .ca_file(SERVICE_ACCOUNT_CA_PATH),
            (None, None, false) => {
                KubeVirtConnectorBuilder::in_cluster().map_err(BuildError::Upstream)?
            }
        };
        if let Some(api_path) = self.api_path {
            upstream = upstream.api_path(api_path);
        }
        let connector = upstream.build().map_err(BuildError::Upstream)?;
        let engine = ProxyEngine::new(verifier, connector, self.server);
        engine
            .verifier()
            .attach_metrics(engine.metrics().key_metrics());
        Ok(WebsocketProxy {
            engine,
            thread: Mutex::new(None),
        })
    }
}
