//! The engine behind every API: accept loop, request handling, session relay, drain.
mod admission;
mod session;
mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use proxy_auth::TokenVerifier;
use proxy_control::{Control, ControlConfig};
use proxy_core::{ErrorChain, StopRequest};
use proxy_keys::AdminToken;
use proxy_share::Hubs;
use proxy_upstream::Connector;
use proxy_wire::{HeadError, RequestHead, read_request_head};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tracing::{Instrument, debug, field, info, info_span, warn};

use crate::admin_api::{AdminApi, read_body};
use crate::config::ServerConfig;
use crate::http::{write_response, write_response_with_headers, write_text_response};
use crate::metrics::ProxyMetrics;
use crate::path::redact_target;

/// A browser's connection: plain TCP, or TLS on the console port when it serves `wss://`.
type ClientStream = Either<TcpStream, Box<tokio_rustls::server::TlsStream<TcpStream>>>;

/// Where the server is in its life; readiness is `Serving`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Serving,
    /// Not accepting; live sessions continue until they end or the drain timeout passes.
    Draining,
    /// The drain timeout passed: live sessions are being closed with 1001.
    Closing,
    Stopped,
}

/// Which listener a connection came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListenerRole {
    Main,
    Admin,
}

/// Pause after a failed `accept` (for example out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// The proxy engine, generic over its two seams: the token verifier and the upstream connector.
///
/// [`WebsocketProxy`](crate::WebsocketProxy) is this engine with the real
/// [`proxy_auth`] verifier and the KubeVirt connector; tests and embedders can plug in their
/// own. Cloning is cheap and shares the engine (metrics, readiness, session count).
pub struct ProxyEngine<V, C> {
    inner: Arc<Inner<V, C>>,
}

impl<V, C> Clone for ProxyEngine<V, C> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<V, C> std::fmt::Debug for ProxyEngine<V, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProxyEngine")
            .field("config", &self.inner.config)
            .field("phase", &*self.inner.phase.borrow())
            .finish_non_exhaustive()
    }
}

struct Inner<V, C> {
    verifier: V,
    connector: C,
    config: ServerConfig,
    metrics: ProxyMetrics,
    phase: watch::Sender<Phase>,
    session_slots: Arc<Semaphore>,
    next_session_id: AtomicU64,
    control: Control,
    /// With shared consoles: the hubs of this replica.
    hubs: Option<Arc<Hubs>>,
}

impl<V, C> ProxyEngine<V, C>
where
    V: TokenVerifier,
    C: Connector,
{
    /// An engine that verifies tokens with `verifier` and dials upstreams with `connector`.
    pub fn new(verifier: V, connector: C, config: ServerConfig) -> Self {
        let session_slots = Arc::new(Semaphore::new(
            config.limits.max_sessions.min(Semaphore::MAX_PERMITS),
        ));
        let (phase, _) = watch::channel(Phase::Idle);
        let hubs = config
            .share_consoles
            .clone()
            .map(|share| Arc::new(Hubs::new(share)));
        let metrics = ProxyMetrics::new();
        let control = Control::new(
            ControlConfig {
                store: Arc::clone(&config.state),
                policy: config.store_policy,
                replica: config.replica.clone(),
                limits: config.session_limits,
                single_use_tokens: config.single_use_tokens,
            },
            metrics.store().clone(),
        );
        Self {
            inner: Arc::new(Inner {
                verifier,
                connector,
                config,
                metrics,
                phase,
                session_slots,
                next_session_id: AtomicU64::new(1),
                control,
                hubs,
            }),
        }
    }

    /// The token verifier.
    pub fn verifier(&self) -> &V {
        &self.inner.verifier
    }

    /// The engine's settings.
    pub fn config(&self) -> &ServerConfig {
        &self.inner.config
    }

    /// The engine's metrics (also served on `/metrics`).
    pub fn metrics(&self) -> &ProxyMetrics {
        &self.inner.metrics
    }

    /// Whether a listener is being served and no shutdown has begun (what `/readyz` reports).
    pub fn is_ready(&self) -> bool {
        *self.inner.phase.borrow() == Phase::Serving
    }

    /// Serves console requests (and, unless disabled, `/healthz`, `/readyz`, `/metrics`) on
    /// `listener` until `shutdown` resolves, then drains: readiness goes false, the listener
    /// closes, live sessions continue for up to [`ServerConfig::drain_timeout`] and are then
    /// closed with 1001. Returns when every connection is gone.
    pub async fn serve<F>(&self, listener: TcpListener, shutdown: F)
    where
        F: Future<Output = ()> + Send,
    {
        let inner = &self.inner;
        if let Ok(address) = listener.local_addr() {
            info!(%address, "listening for console connections");
        }
        // Revocations are read before the first session, and kept current from then on.
        inner.control.refresh().await;
        let keeper = tokio::spawn(inner.control.keep_current());
        let bookkeeper = tokio::spawn(Arc::clone(inner).book_live_counters());
        inner.phase.send_replace(Phase::Serving);
        let mut connections = Arc::clone(inner)
            .accept_until(listener, ListenerRole::Main, shutdown)
            .await;
        inner.phase.send_replace(Phase::Draining);
        let drain_timeout = inner.config.drain_timeout;
        info!(
            connections = connections.len(),
            active_sessions = inner.metrics.active_sessions(),
            drain_timeout_ms = millis(drain_timeout),
            "shutdown requested: not ready, no longer accepting, draining live sessions"
        );
        let all_ended = async { while connections.join_next().await.is_some() {} };
        if timeout(drain_timeout, all_ended).await.is_err() {
            inner.phase.send_replace(Phase::Closing);
            // Sessions relaying now learn it through their stop signal; one still being set
            // up sees the phase (run_session, open_upstream).
            inner.control.stop_all(&StopRequest::Shutdown);
            info!(
                connections = connections.len(),
                "drain timeout reached: closing the remaining sessions with 1001"
            );
            let grace = inner.config.relay.close_timeout + inner.config.limits.handshake_timeout;
            let all_closed = async { while connections.join_next().await.is_some() {} };
            if timeout(grace, all_closed).await.is_err() {
                warn!(
                    connections = connections.len(),
                    "connections still open after the close grace period: dropping them"
                );
                connections.shutdown().await;
            }
        }
        keeper.abort();
        bookkeeper.abort();
        inner.book_live_counters_once();
        inner.phase.send_replace(Phase::Stopped);
        info!("stopped");
    }

    /// Serves only `/healthz`, `/readyz` and `/metrics` on a separate (admin) listener until
    /// `shutdown` resolves. Readiness reflects [`serve`](Self::serve) of the same engine.
    pub async fn serve_admin<F>(&self, listener: TcpListener, shutdown: F)
    where
        F: Future<Output = ()> + Send,
    {
        if let Ok(address) = listener.local_addr() {
            info!(%address, "listening for health and metrics requests");
        }
        let mut connections = Arc::clone(&self.inner)
            .accept_until(listener, ListenerRole::Admin, shutdown)
            .await;
        connections.shutdown().await;
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// An error and its sources on one line.
fn error_chain(error: &dyn std::error::Error) -> String {
    ErrorChain(error).to_string()
}

impl<V, C> Inner<V, C>
where
    V: TokenVerifier,
    C: Connector,
{
    /// Books live sessions' and hubs' counters into the metrics every second, so byte and
    /// frame rates follow traffic while sessions run.
    async fn book_live_counters(self: Arc<Self>) {
        let mut every_second = tokio::time::interval(Duration::from_secs(1));
        every_second.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every_second.tick().await;
            self.book_live_counters_once();
        }
    }

    fn book_live_counters_once(&self) {
        self.metrics.book_live(
            &self.control.live_stats(),
            self.hubs.as_deref().map(|hubs| hubs.totals().as_ref()),
        );
    }

    /// Resolves once live sessions must be closed (drain timeout passed or the engine is gone).
    fn closing_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut phase = self.phase.subscribe();
        async move {
            let _ = phase.wait_for(|phase| *phase == Phase::Closing).await;
        }
    }

    /// Writes a plain-text answer, bounded by the handshake timeout (the client may not read).
    async fn respond(&self, stream: &mut ClientStream, status: u16, text: &str) {
        let written = timeout(
            self.config.limits.handshake_timeout,
            write_text_response(stream, status, text),
        )
        .await;
        if !matches!(written, Ok(Ok(()))) {
            debug!(status, "could not write the response");
        }
    }

    /// Accepts connections on `listener` for `role` until `shutdown` resolves, then closes the
    /// listener and returns the connections still running.
    async fn accept_until<F>(
        self: Arc<Self>,
        listener: TcpListener,
        role: ListenerRole,
        shutdown: F,
    ) -> JoinSet<()>
    where
        F: Future<Output = ()> + Send,
    {
        let mut connections = JoinSet::new();
        let mut shutdown = pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(Arc::clone(&self).handle_connection(stream, peer, role));
                    }
                    Err(error) => {
                        warn!(%error, ?role, "accepting a connection failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                },
            }
        }
        connections
    }

    async fn handle_connection(
        self: Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        role: ListenerRole,
    ) {
        if let Err(error) = tcp.set_nodelay(true) {
            debug!(%peer, %error, "could not set TCP_NODELAY");
        }
        // The task lives as long as the session: the phases before the relay, and the rare
        // ones, are boxed so that their futures are freed when they end instead of sizing
        // every session's task (docs/performance.md, memory per idle console).
        let Some(mut stream) = Box::pin(self.accept_tls(tcp, peer, role)).await else {
            return;
        };
        let Some((head, already_read)) = Box::pin(self.read_head(&mut stream, peer)).await else {
            return;
        };
        if (role == ListenerRole::Admin || self.config.admin_on_main_port)
            && Box::pin(self.answer_admin_request(&mut stream, &head)).await
        {
            return;
        }
        if role == ListenerRole::Admin
            && let Some(token) = &self.config.admin_token
            && head.path().starts_with("/api/v1/")
        {
            Box::pin(self.answer_api_request(stream, &head, already_read, token, peer)).await;
            return;
        }
        if role == ListenerRole::Admin {
            self.respond(&mut stream, 404, "not found").await;
            return;
        }
        let session_id = self.next_session_id.fetch_add(1, Ordering::Relaxed);
        let session_name = self.control.session_id(session_id);
        let span = info_span!(
            "session",
            id = %session_name,
            %peer,
            path = %redact_target(&head.target, &self.config.path_prefix),
            user_id = field::Empty,
            lab_instance = field::Empty,
            namespace = field::Empty,
            vmi = field::Empty,
        );
        self.handle_console(session_id, session_name, peer, stream, head, already_read)
            .instrument(span)
            .await;
    }

    /// The TLS handshake on the console port when it serves `wss://`; the plain stream
    /// otherwise. `None` when the handshake failed or did not come in time.
    async fn accept_tls(
        &self,
        tcp: TcpStream,
        peer: SocketAddr,
        role: ListenerRole,
    ) -> Option<ClientStream> {
        let (Some(tls), ListenerRole::Main) = (&self.config.tls, role) else {
            return Some(Either::Left(tcp));
        };
        let (config, reload) = tls.current();
        self.metrics.tls_reload(reload);
        let handshake = TlsAcceptor::from(config).accept(tcp);
        match timeout(self.config.limits.handshake_timeout, handshake).await {
            Ok(Ok(tls_stream)) => Some(Either::Right(Box::new(tls_stream))),
            Ok(Err(error)) => {
                debug!(%peer, %error, "TLS handshake failed");
                self.metrics.rejected("tls_handshake");
                None
            }
            Err(_elapsed) => {
                debug!(%peer, "no TLS handshake within the handshake timeout");
                self.metrics.rejected("tls_handshake");
                None
            }
        }
    }

    /// The request head and what arrived after it; `None` (answered when there is someone to
    /// answer) when none came in time, it is too large or malformed.
    async fn read_head(
        &self,
        stream: &mut ClientStream,
        peer: SocketAddr,
    ) -> Option<(RequestHead, Vec<u8>)> {
        let limits = &self.config.limits;
        let read = timeout(
            limits.handshake_timeout,
            read_request_head(stream, limits.max_header_bytes),
        )
        .await;
        let (status, text) = match read {
            Ok(Ok(parsed)) => return Some(parsed),
            Err(_elapsed) => {
                debug!(%peer, "no complete request head within the handshake timeout");
                self.metrics.rejected("handshake_timeout");
                (408, "request timeout")
            }
            Ok(Err(HeadError::TooLarge { limit })) => {
                debug!(%peer, limit, "request head too large");
                self.metrics.rejected("header_too_large");
                (431, "request header too large")
            }
            Ok(Err(error @ HeadError::Malformed(_))) => {
                debug!(%peer, error = %error_chain(&error), "malformed request");
                self.metrics.rejected("malformed_request");
                (400, "malformed request")
            }
            Ok(Err(error)) => {
                debug!(%peer, error = %error_chain(&error), "connection ended before a request");
                return None;
            }
        };
        self.respond(stream, status, text).await;
        None
    }

    /// Answers an admin API request (reading its body first), bounded by the handshake
    /// timeout.
    async fn answer_api_request(
        &self,
        mut stream: ClientStream,
        head: &RequestHead,
        already_read: Vec<u8>,
        token: &AdminToken,
        peer: SocketAddr,
    ) {
        let api = AdminApi {
            token,
            control: &self.control,
            peer,
            hubs: self.hubs.as_deref(),
        };
        let answered = timeout(self.config.limits.handshake_timeout, async {
            let response = match read_body(&mut stream, head, already_read).await {
                Ok(body) => api.answer(head, &body).await,
                Err(response) => response,
            };
            let mut headers = String::new();
            if response.authenticate {
                headers.push_str("WWW-Authenticate: Bearer realm=\"ws-proxy admin\"\r\n");
            }
            if let Some(allow) = response.allow {
                headers.push_str(&format!("Allow: {allow}\r\n"));
            }
            write_response_with_headers(
                &mut stream,
                response.status,
                "application/json",
                &headers,
                response.body.as_bytes(),
            )
            .await
        })
        .await;
        if !matches!(answered, Ok(Ok(()))) {
            debug!(%peer, "could not answer the admin API request");
        }
    }

    /// Answers `/healthz`, `/readyz` and `/metrics`; returns false for any other path.
    async fn answer_admin_request(&self, stream: &mut ClientStream, head: &RequestHead) -> bool {
        let path = head.path();
        if !matches!(path, "/healthz" | "/readyz" | "/metrics") {
            return false;
        }
        if head.method != "GET" {
            self.respond(stream, 405, "method not allowed").await;
            return true;
        }
        let (status, content_type, body) = match path {
            "/healthz" => (200, "text/plain; charset=utf-8", "ok\n".to_owned()),
            "/readyz" if *self.phase.borrow() == Phase::Serving => {
                (200, "text/plain; charset=utf-8", "ready\n".to_owned())
            }
            "/readyz" => (503, "text/plain; charset=utf-8", "not ready\n".to_owned()),
            _ => match self.metrics.encode() {
                Ok(text) => (200, "text/plain; version=0.0.4; charset=utf-8", text),
                Err(_) => (
                    500,
                    "text/plain; charset=utf-8",
                    "metrics unavailable\n".to_owned(),
                ),
            },
        };
        let written = timeout(
            self.config.limits.handshake_timeout,
            write_response(stream, status, content_type, body.as_bytes()),
        )
        .await;
        if !matches!(written, Ok(Ok(()))) {
            debug!(path, "could not write the admin response");
        }
        true
    }

    async fn handle_console(
        &self,
        session_id: u64,
        session_name: String,
        peer: SocketAddr,
        stream: ClientStream,
        head: RequestHead,
        already_read: Vec<u8>,
    ) {
        match Box::pin(self.admit(session_id, session_name, peer, &head)).await {
            Ok(admitted) => self.run_session(stream, head, already_read, admitted).await,
            Err(refused) => Box::pin(self.reject(stream, &head, already_read, refused)).await,
        }
    }
}
