//! The engine behind every API: accept loop, request handling, session relay, drain.
use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use futures_util::{SinkExt as _, StreamExt as _};
use proxy_auth::{AuthError, ConsoleRole, Grant, TokenVerifier};
use proxy_core::FrameTransport;
use proxy_core::{
    CloseFrame, ErrorChain, Frame, RelayConfig, RelayOutcome, StopRequest, relay_controlled,
};
use proxy_upstream::{Connector, UpstreamTarget};
use proxy_wire::{
    HeadError, PerMessageDeflate, RequestHead, WireLimits, WireRole, WireTransport, accept_upgrade,
    read_request_head, write_switching_protocols,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, timeout};
use tokio_rustls::TlsAcceptor;
use tokio_util::either::Either;
use tracing::{Instrument, debug, field, info, info_span, warn};

use crate::admin_api::{AdminApi, read_body};
use crate::config::ServerConfig;
use crate::console::{ConsoleSession, Inspected};
use crate::http::{
    choose_client_subprotocol, write_response, write_response_with_headers, write_text_response,
};
use crate::metrics::ProxyMetrics;
use crate::path::PathError;
use crate::path::{parse_console_target, redact_target};
use crate::recording::Recorder;
use crate::reject::{RejectStyle, Rejection};
use crate::sessions::{Registry, RevocationCheck, SessionLease};
use crate::share::{HubTransport, Hubs, JoinError, Participant};
use crate::single_use::FirstUse;
use crate::state::{OnOutage, Opened, SessionRecord, hash_token_id, unix_seconds};
use crate::token_source::{TokenSource, find_token, offered_subprotocols};

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

/// A console request that passed admission: everything its session needs.
struct Admitted<T> {
    accept_key: String,
    token_expires_at: SystemTime,
    token_source: TokenSource,
    /// What the session does inside the console stream (observer filter, recording), if
    /// anything.
    console: Option<Arc<ConsoleSession>>,
    upstream: SessionUpstream<T>,
    /// The subprotocol the upstream agreed to.
    upstream_subprotocol: Option<String>,
    dial_started: Instant,
    /// The session in the registry and the store while it lives.
    lease: SessionLease,
    /// Holds one of [`ServerConfig`]'s session slots while the session lives.
    _session_slot: OwnedSemaphorePermit,
}

/// Why a console request was refused, its accept key when the request was a valid upgrade
/// (the close-frame reject style answers those with an upgrade and a close), and for a refused
/// token the class of the problem (`expired`, `bad_signature`, ...; never the token).
struct Refused {
    rejection: Rejection,
    accept_key: Option<String>,
    detail: Option<&'static str>,
}

impl Refused {
    /// Refused with an HTTP status in every reject style.
    fn without_upgrade(rejection: Rejection) -> Self {
        Self {
            rejection,
            accept_key: None,
            detail: None,
        }
    }

    /// Refused before the upgrade is checked: with the accept key if the request is one.
    fn before_upgrade_check(
        rejection: Rejection,
        accept_key: &Result<String, proxy_wire::UpgradeError>,
    ) -> Self {
        Self {
            accept_key: accept_key.as_ref().ok().cloned(),
            ..Self::without_upgrade(rejection)
        }
    }

    /// Refused after the checks of a valid upgrade.
    fn after_upgrade(rejection: Rejection, accept_key: String) -> Self {
        Self {
            rejection,
            accept_key: Some(accept_key),
            detail: None,
        }
    }
}

/// Pause after a failed `accept` (for example out of file descriptors) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Close code sent to the client when its token expires during a session
/// ([`ServerConfig::close_on_token_expiry`]); 4000 + 401, in the style of the refusal codes.
const TOKEN_EXPIRED_CLOSE_CODE: u16 = 4001;
/// Close reason sent with [`TOKEN_EXPIRED_CLOSE_CODE`].
const TOKEN_EXPIRED_REASON: &str = "token expired";

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
    registry: Arc<Registry>,
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
        let registry = Arc::new(Registry::new(
            Arc::clone(&config.state),
            config.store_policy,
            config.replica.clone(),
        ));
        Self {
            inner: Arc::new(Inner {
                verifier,
                connector,
                config,
                metrics: ProxyMetrics::new(),
                phase,
                session_slots,
                next_session_id: AtomicU64::new(1),
                registry,
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
        let store_metrics = inner.metrics.store().clone();
        inner.registry.refresh(&store_metrics).await;
        let keeper = tokio::spawn(Arc::clone(&inner.registry).keep(store_metrics));
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
    /// Resolves once live sessions must be closed (drain timeout passed or the engine is gone).
    fn closing_signal(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut phase = self.phase.subscribe();
        async move {
            let _ = phase.wait_for(|phase| *phase == Phase::Closing).await;
        }
    }

    /// The relay settings of one session: the configured ones and, when
    /// [`ServerConfig::close_on_token_expiry`] is on, the token's expiry as the deadline (unless
    /// a configured deadline comes first).
    fn session_relay_config(&self, token_expires_at: SystemTime) -> Cow<'_, RelayConfig> {
        let configured = &self.config.relay;
        if !self.config.close_on_token_expiry {
            return Cow::Borrowed(configured);
        }
        let remaining = token_expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        // An expiry too far ahead for the monotonic clock to represent never comes.
        let Some(expires_at) = Instant::now().checked_add(remaining) else {
            return Cow::Borrowed(configured);
        };
        if configured
            .deadline
            .as_ref()
            .is_some_and(|(deadline, _)| *deadline <= expires_at)
        {
            return Cow::Borrowed(configured);
        }
        let mut config = configured.clone();
        config.deadline = Some((
            expires_at,
            CloseFrame::new(TOKEN_EXPIRED_CLOSE_CODE, TOKEN_EXPIRED_REASON),
        ));
        Cow::Owned(config)
    }

    /// The browser's WebSocket once its upgrade is answered; `already_read` is what arrived
    /// after the request head.
    fn client_transport(
        &self,
        stream: ClientStream,
        already_read: &[u8],
    ) -> WireTransport<ClientStream> {
        WireTransport::from_partially_read(
            stream,
            WireRole::Server,
            WireLimits::max_message(self.config.limits.max_message_bytes),
            already_read.into(),
        )
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
        let limits = &self.config.limits;
        let mut stream = match (&self.config.tls, role) {
            (Some(tls), ListenerRole::Main) => {
                let (config, reload) = tls.current();
                self.metrics.tls_reload(reload);
                let handshake = TlsAcceptor::from(config).accept(tcp);
                match timeout(limits.handshake_timeout, handshake).await {
                    Ok(Ok(tls_stream)) => Either::Right(Box::new(tls_stream)),
                    Ok(Err(error)) => {
                        debug!(%peer, %error, "TLS handshake failed");
                        self.metrics.rejected("tls_handshake");
                        return;
                    }
                    Err(_elapsed) => {
                        debug!(%peer, "no TLS handshake within the handshake timeout");
                        self.metrics.rejected("tls_handshake");
                        return;
                    }
                }
            }
            _ => Either::Left(tcp),
        };
        let read = timeout(
            limits.handshake_timeout,
            read_request_head(&mut stream, limits.max_header_bytes),
        )
        .await;
        let (head, already_read) = match read {
            Ok(Ok(parsed)) => parsed,
            Err(_elapsed) => {
                debug!(%peer, "no complete request head within the handshake timeout");
                self.metrics.rejected("handshake_timeout");
                self.respond(&mut stream, 408, "request timeout").await;
                return;
            }
            Ok(Err(HeadError::TooLarge { limit })) => {
                debug!(%peer, limit, "request head too large");
                self.metrics.rejected("header_too_large");
                self.respond(&mut stream, 431, "request header too large")
                    .await;
                return;
            }
            Ok(Err(error @ HeadError::Malformed(_))) => {
                debug!(%peer, error = %error_chain(&error), "malformed request");
                self.metrics.rejected("malformed_request");
                self.respond(&mut stream, 400, "malformed request").await;
                return;
            }
            Ok(Err(error)) => {
                debug!(%peer, error = %error_chain(&error), "connection ended before a request");
                return;
            }
        };

        if (role == ListenerRole::Admin || self.config.admin_on_main_port)
            && self.answer_admin_request(&mut stream, &head).await
        {
            return;
        }
        if role == ListenerRole::Admin
            && let Some(token) = &self.config.admin_token
            && head.path().starts_with("/api/v1/")
        {
            self.answer_api_request(stream, &head, already_read, token, peer)
                .await;
            return;
        }
        if role == ListenerRole::Admin {
            self.respond(&mut stream, 404, "not found").await;
            return;
        }

        let session_id = self.next_session_id.fetch_add(1, Ordering::Relaxed);
        let session_name = self.registry.session_id(session_id);
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

    /// Answers an admin API request (reading its body first), bounded by the handshake
    /// timeout.
    async fn answer_api_request(
        &self,
        mut stream: ClientStream,
        head: &RequestHead,
        already_read: Vec<u8>,
        token: &crate::admin_api::AdminToken,
        peer: SocketAddr,
    ) {
        let api = AdminApi {
            token,
            registry: &self.registry,
            metrics: self.metrics.store(),
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
        match self.admit(session_id, session_name, peer, &head).await {
            Ok(admitted) => self.run_session(stream, head, already_read, admitted).await,
            Err(refused) => self.reject(stream, &head, already_read, refused).await,
        }
    }

    /// Decides whether a console request becomes a session, in order: the engine is serving,
    /// the browser's origin is allowed, the path names a console, exactly one token is found,
    /// the request is a WebSocket upgrade, a session slot is free, the token allows the VM, a
    /// single-use token is used for the first time, and the upstream console opened. Nothing is
    /// relayed and the client's upgrade is not answered before all of these passed.
    async fn admit(
        &self,
        session_id: u64,
        session_name: String,
        peer: SocketAddr,
        head: &RequestHead,
    ) -> Result<Admitted<C::Transport>, Refused> {
        if *self.phase.borrow() != Phase::Serving {
            return Err(Refused::without_upgrade(Rejection::Draining));
        }
        let accept_key = accept_upgrade(head);
        if let Some(allowed) = &self.config.allowed_origins
            && let Some(origin) = head.values("origin").next()
            && !std::str::from_utf8(origin).is_ok_and(|origin| allowed.allows(origin))
        {
            return Err(Refused::before_upgrade_check(
                Rejection::OriginNotAllowed,
                &accept_key,
            ));
        }
        let sources = &self.config.token_sources;
        let path_tokens = sources.enabled.contains(&TokenSource::Path);
        let console = parse_console_target(&head.target, &self.config.path_prefix, path_tokens)
            .map_err(|error| {
                Refused::before_upgrade_check(Rejection::BadPath(error), &accept_key)
            })?;
        let found = find_token(head, console.token, sources)
            .map_err(|problem| {
                Refused::before_upgrade_check(Rejection::TokenSource(problem), &accept_key)
            })?
            // `/{prefix}/{x}` with no token anywhere is what it always was: not a console URL.
            .ok_or_else(|| {
                Refused::before_upgrade_check(
                    Rejection::BadPath(PathError::InvalidUrl),
                    &accept_key,
                )
            })?;
        let accept_key = accept_key.map_err(|error| {
            debug!(%error, "not a websocket upgrade");
            Refused::without_upgrade(Rejection::NotWebSocket)
        })?;
        let session_slot = Arc::clone(&self.session_slots)
            .try_acquire_owned()
            .map_err(|_| Refused::without_upgrade(Rejection::AtCapacity))?;

        let mut verified = self.verifier.verify(&found.token, &console.vmi_name);
        if matches!(verified, Err(AuthError::UnknownKeyId))
            && let Some(refresh) = self.verifier.refresh_for_unknown_key()
            && refresh.await
        {
            verified = self.verifier.verify(&found.token, &console.vmi_name);
        }
        let grant = match verified {
            Ok(grant) => grant,
            Err(error) => {
                let rejection = if error.is_forbidden() {
                    Rejection::VmNotAllowed
                } else {
                    Rejection::InvalidToken
                };
                return Err(Refused {
                    detail: Some(error.label()),
                    ..Refused::after_upgrade(rejection, accept_key)
                });
            }
        };
        let token_source = found.source;
        drop(found);
        let token_id_hash = grant.token_id.as_deref().map(hash_token_id);
        let user_id = grant.user_id.to_string();
        let lab_instance_id = grant.lab_instance_id.to_string();
        match self
            .registry
            .check_revocation(&user_id, &lab_instance_id, token_id_hash.as_deref())
        {
            RevocationCheck::Allowed => {}
            RevocationCheck::Revoked => {
                return Err(Refused::after_upgrade(Rejection::TokenRevoked, accept_key));
            }
            RevocationCheck::Unknown => {
                self.metrics.store().outage_decision("revocations");
                return Err(Refused::without_upgrade(Rejection::StoreUnavailable));
            }
        }
        if self.config.single_use_tokens && token_id_hash.is_none() {
            return Err(Refused::after_upgrade(
                Rejection::TokenWithoutId,
                accept_key,
            ));
        }
        let record = SessionRecord {
            id: session_name,
            replica: self.registry.replica().to_owned(),
            user_id,
            lab_id: grant.lab_id.to_string(),
            lab_instance_id,
            namespace: grant.namespace.clone(),
            vmi: grant.vmi_name.clone(),
            peer: peer.to_string(),
            role: grant.console.role.as_str().to_owned(),
            started_at: unix_seconds(SystemTime::now()),
            token_expires_at: unix_seconds(grant.expires_at),
            client_subprotocol: String::new(),
            client_to_upstream_bytes: 0,
            client_to_upstream_frames: 0,
            upstream_to_client_bytes: 0,
            upstream_to_client_frames: 0,
        };
        let store = &self.registry.store;
        let policy = self.registry.policy;
        let limits = &self.config.session_limits;
        let store_metrics = self.metrics.store();
        match store_metrics
            .store_call(
                "open_session",
                store.open_session(&record, limits, policy.lease),
            )
            .await
        {
            Ok(Opened::Yes) => {}
            Ok(Opened::OverLimit(scope)) => {
                return Err(Refused::after_upgrade(
                    Rejection::OverLimit(scope),
                    accept_key,
                ));
            }
            Err(error) => {
                warn!(error = %ErrorChain(&error), "the state store cannot register the session");
                if limits.any() {
                    store_metrics.outage_decision("limits");
                    if policy.limits == OnOutage::Closed {
                        return Err(Refused::without_upgrade(Rejection::StoreUnavailable));
                    }
                }
            }
        }
        // From here on, dropping the lease takes the session out of the store again.
        let lease = self.registry.insert(record, token_id_hash.clone());
        let single_use_id = match (&token_id_hash, self.config.single_use_tokens) {
            (Some(hash), true) => match store_metrics
                .store_call("first_use", store.first_use(hash, grant.expires_at))
                .await
            {
                Ok(FirstUse::Yes) => Some(hash.clone()),
                Ok(FirstUse::AlreadyUsed) => {
                    return Err(Refused::after_upgrade(
                        Rejection::TokenAlreadyUsed,
                        accept_key,
                    ));
                }
                Ok(FirstUse::Full) => {
                    warn!("the memory of single-use tokens is full; refusing new sessions");
                    return Err(Refused::without_upgrade(Rejection::SingleUseMemoryFull));
                }
                Err(error) => {
                    warn!(error = %ErrorChain(&error), "the state store cannot check a single-use token");
                    store_metrics.outage_decision("single_use");
                    if policy.single_use == OnOutage::Closed {
                        return Err(Refused::without_upgrade(Rejection::StoreUnavailable));
                    }
                    None
                }
            },
            _ => None,
        };
        // A use that opened no session is forgotten, so the holder can try again.
        let release_unused = || {
            if let Some(hash) = single_use_id.clone() {
                let store = Arc::clone(store);
                tokio::spawn(async move {
                    let _ = store.forget_use(&hash).await;
                });
            }
        };
        let span = tracing::Span::current();
        span.record("user_id", field::display(&grant.user_id));
        span.record("lab_instance", field::display(&grant.lab_instance_id));
        span.record("namespace", grant.namespace.as_str());
        span.record("vmi", grant.vmi_name.as_str());

        // Before the dial: a strict deployment that cannot record must refuse without taking
        // KubeVirt's single VNC slot, which the dial would take from whoever holds it. A shared
        // console's hub does its own RFB: roles are the hub's, recordings are not made.
        let console = match &self.hubs {
            Some(_) => None,
            None => match self.console_session(session_id, &grant) {
                Ok(console) => console,
                Err(rejection) => {
                    release_unused();
                    return Err(Refused::after_upgrade(rejection, accept_key));
                }
            },
        };
        let target = UpstreamTarget {
            namespace: &grant.namespace,
            vmi_name: &grant.vmi_name,
        };
        let dial_started = Instant::now();
        let connect = async {
            let dialled = self.connector.connect(target).await;
            let tls = dialled
                .as_ref()
                .ok()
                .and_then(|upstream| upstream.tls_handshake);
            self.metrics.upstream_dialled(dial_started.elapsed(), tls);
            dialled
        };
        let joined = async {
            match &self.hubs {
                None => connect.await.map(|upstream| {
                    (
                        SessionUpstream::Direct(upstream.transport),
                        upstream.subprotocol,
                    )
                }),
                Some(hubs) => {
                    let participant = Participant {
                        session: lease.record.id.clone(),
                        user_id: lease.record.user_id.clone(),
                        controls: grant.console.role != ConsoleRole::Observer,
                    };
                    let key = (grant.namespace.clone(), grant.vmi_name.clone());
                    match hubs.join(key, participant, connect).await {
                        Ok((hub, subprotocol)) => Ok((SessionUpstream::Shared(hub), subprotocol)),
                        Err(JoinError::Dial(error)) => Err(error),
                        Err(JoinError::Full) => Ok((SessionUpstream::Full, None)),
                    }
                }
            }
        };
        let dialled = tokio::select! {
            dialled = joined => dialled,
            () = self.closing_signal() => {
                release_unused();
                return Err(Refused::without_upgrade(Rejection::Draining));
            }
        };
        if matches!(dialled, Ok((SessionUpstream::Full, _))) {
            release_unused();
            return Err(Refused::after_upgrade(Rejection::HubFull, accept_key));
        }
        let upstream = dialled.map_err(|error| {
            release_unused();
            let rejection = Rejection::from_failure(error.class());
            let error = error_chain(&error);
            // Unreachable or slow upstreams are the operator's problem; a VM that is
            // missing or stopped is the user's.
            if matches!(
                rejection,
                Rejection::BadGateway | Rejection::UpstreamTimeout
            ) {
                warn!(%error, reason = rejection.label(), "opening the upstream console failed");
            } else {
                info!(%error, reason = rejection.label(), "opening the upstream console failed");
            }
            Refused::after_upgrade(rejection, accept_key.clone())
        })?;
        let (upstream, upstream_subprotocol) = upstream;
        Ok(Admitted {
            accept_key,
            token_expires_at: grant.expires_at,
            token_source,
            console,
            upstream,
            upstream_subprotocol,
            dial_started,
            lease,
            _session_slot: session_slot,
        })
    }

    /// What the session does inside the console stream: an observer's input filter, a
    /// recording, both or (`None`) neither. A recording that cannot start refuses a strict
    /// deployment's session and is left out otherwise.
    fn console_session(
        &self,
        session_id: u64,
        grant: &Grant,
    ) -> Result<Option<Arc<ConsoleSession>>, Rejection> {
        let observer = grant.console.role == ConsoleRole::Observer;
        let metrics = self.metrics.console().clone();
        let recording = self
            .config
            .recording
            .as_ref()
            .filter(|recording| recording.records(grant.console.record));
        let recorder = match recording {
            None => None,
            Some(recording) => match Recorder::start(
                recording,
                session_id,
                &grant.namespace,
                &grant.vmi_name,
                Arc::new(metrics.clone()),
            ) {
                Ok(recorder) => {
                    info!(path = %recorder.path.display(), "recording the session");
                    Some(recorder)
                }
                Err(error) => {
                    metrics.recording_not_started();
                    warn!(error = %ErrorChain(&error), strict = recording.strict, "the session recording cannot start");
                    if recording.strict {
                        return Err(Rejection::RecordingUnavailable);
                    }
                    None
                }
            },
        };
        if observer {
            metrics.observer_session();
            info!("observer session: keyboard, pointer and clipboard do not reach the VM");
        }
        if !observer && recorder.is_none() {
            return Ok(None);
        }
        let strict = recording.is_some_and(|recording| recording.strict);
        Ok(Some(ConsoleSession::new(
            observer, recorder, strict, metrics,
        )))
    }

    /// Answers the client's upgrade and relays until either side ends.
    async fn run_session(
        &self,
        mut stream: ClientStream,
        head: RequestHead,
        already_read: Vec<u8>,
        admitted: Admitted<C::Transport>,
    ) {
        let Admitted {
            accept_key,
            token_expires_at,
            token_source,
            console,
            upstream,
            upstream_subprotocol,
            dial_started,
            mut lease,
            _session_slot,
        } = admitted;
        let offered = offered_subprotocols(&head);
        let subprotocol = choose_client_subprotocol(&offered, upstream_subprotocol.as_deref());
        let deflate = if self.config.permessage_deflate {
            PerMessageDeflate::negotiate(head.list_tokens("sec-websocket-extensions"))
        } else {
            None
        };
        let extensions = deflate.map(|accepted| accepted.response_header());
        let answered = timeout(
            self.config.limits.handshake_timeout,
            write_switching_protocols(&mut stream, &accept_key, subprotocol, extensions.as_deref()),
        )
        .await;
        if !matches!(answered, Ok(Ok(()))) {
            debug!("the client went away before the upgrade was answered");
            return;
        }
        let client = self
            .client_transport(stream, &already_read)
            .with_permessage_deflate(deflate);
        if deflate.is_some() {
            self.metrics.deflate_negotiated();
        }
        self.registry
            .set_client_subprotocol(&lease.record.id, subprotocol.unwrap_or(""));

        self.metrics.session_started();
        info!(
            target: "ws_proxy::audit",
            event = "session_started",
            role = lease.record.role.as_str(),
            client_subprotocol = subprotocol.unwrap_or(""),
            upstream_subprotocol = upstream_subprotocol.as_deref().unwrap_or(""),
            shared = matches!(upstream, SessionUpstream::Shared(_)),
            upstream_connect_ms = millis(dial_started.elapsed()),
            token_source = token_source.label(),
            "session started"
        );
        // The request head is not needed while the session lasts.
        drop(offered);
        drop(head);
        let relay_config = self.session_relay_config(token_expires_at);
        let closing = self.closing_signal();
        let stopped = lease.stopped.take();
        let stop = async move {
            tokio::select! {
                () = closing => StopRequest::Shutdown,
                Some(Ok(request)) = async move { Some(stopped?.await) } => request,
                else => std::future::pending().await,
            }
        };
        let live = Some(Arc::clone(&lease.live));
        let outcome = match &console {
            None => relay_controlled(client, upstream, &relay_config, stop, live).await,
            Some(console) => {
                let (from_client, from_upstream) = (Arc::clone(console), Arc::clone(console));
                relay_controlled(
                    Inspected::new(client, move |frame| from_client.inspect_client_frame(frame)),
                    Inspected::new(upstream, move |frame| {
                        from_upstream.inspect_upstream_frame(frame)
                    }),
                    &relay_config,
                    stop,
                    live,
                )
                .await
            }
        };
        drop(lease);
        self.metrics.session_ended(&outcome);
        log_session_end(&outcome);
        if let Some(console) = console {
            if console.is_observer() {
                info!(
                    dropped_input = console.dropped_input(),
                    "observer session ended"
                );
            }
            if let Some(recorder) = console.recording() {
                info!(
                    path = %recorder.path.display(),
                    complete = !recorder.stopped(),
                    "session recording closed"
                );
            }
        }
    }

    /// Tells the client why it was refused: an HTTP status, or (in the close-frame style, which
    /// `auto` picks for browsers, when the request is a valid upgrade and the rejection has a
    /// close code) an upgrade and a close.
    async fn reject(
        &self,
        mut stream: ClientStream,
        head: &RequestHead,
        already_read: Vec<u8>,
        refused: Refused,
    ) {
        let Refused {
            rejection,
            accept_key,
            detail,
        } = refused;
        self.metrics.rejected(rejection.label());
        let style = self
            .config
            .reject_style
            .for_request(head.values("origin").next().is_some());
        info!(
            status = rejection.status(),
            reason = rejection.label(),
            detail = detail.unwrap_or(""),
            style = style.label(),
            "request refused"
        );
        let close_with = match (style, rejection.close_code(), accept_key) {
            (RejectStyle::CloseFrame, Some(code), Some(key)) => Some((code, key)),
            _ => None,
        };
        let Some((code, accept_key)) = close_with else {
            return self
                .respond(&mut stream, rejection.status(), rejection.reason())
                .await;
        };
        let offered = offered_subprotocols(head);
        let subprotocol = choose_client_subprotocol(&offered, None);
        let close = async move {
            write_switching_protocols(&mut stream, &accept_key, subprotocol, None).await?;
            let mut client = self.client_transport(stream, &already_read);
            let frame = CloseFrame::new(code, rejection.reason());
            // The reply to our close ends the stream; anything else the client sent is dropped.
            if client.send(Frame::Close(Some(frame))).await.is_ok() {
                while let Some(Ok(_)) = client.next().await {}
            }
            Ok::<(), std::io::Error>(())
        };
        let bound = self.config.limits.handshake_timeout + self.config.relay.close_timeout;
        if !matches!(timeout(bound, close).await, Ok(Ok(()))) {
            debug!("the close handshake of the refusal did not complete");
        }
    }
}

fn log_session_end(outcome: &RelayOutcome) {
    let close_code = |frame: &Option<CloseFrame>| frame.as_ref().map_or(0, |f| f.code);
    let close_reason = |frame: &Option<CloseFrame>| {
        frame
            .as_ref()
            .map_or_else(String::new, |f| f.reason.clone())
    };
    info!(
        target: "ws_proxy::audit",
        event = "session_ended",
        ended_by = outcome.ended_by.label(),
        client_to_upstream_bytes = outcome.client_to_upstream.bytes,
        client_to_upstream_frames = outcome.client_to_upstream.frames,
        upstream_to_client_bytes = outcome.upstream_to_client.bytes,
        upstream_to_client_frames = outcome.upstream_to_client.frames,
        duration_ms = millis(outcome.duration),
        close_to_client_code = close_code(&outcome.close_sent_to_client),
        close_to_client_reason = %close_reason(&outcome.close_sent_to_client),
        close_to_upstream_code = close_code(&outcome.close_sent_to_upstream),
        close_to_upstream_reason = %close_reason(&outcome.close_sent_to_upstream),
        "session ended"
    );
}

/// What a session relays to: its own upstream connection, or its viewer side of a shared
/// console's hub.
enum SessionUpstream<T> {
    Direct(T),
    Shared(HubTransport),
    /// The hub has all the viewers it may have (never relayed: refused before).
    Full,
}

impl<T: FrameTransport> futures_util::Stream for SessionUpstream<T> {
    type Item = Result<Frame, proxy_core::TransportError>;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        match self.get_mut() {
            SessionUpstream::Direct(transport) => transport.poll_next_unpin(cx),
            SessionUpstream::Shared(hub) => hub.poll_next_unpin(cx),
            SessionUpstream::Full => std::task::Poll::Ready(None),
        }
    }
}

impl<T: FrameTransport> futures_util::Sink<Frame> for SessionUpstream<T> {
    type Error = proxy_core::TransportError;

    fn poll_ready(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            SessionUpstream::Direct(transport) => transport.poll_ready_unpin(cx),
            SessionUpstream::Shared(hub) => hub.poll_ready_unpin(cx),
            SessionUpstream::Full => {
                std::task::Poll::Ready(Err(proxy_core::TransportError::AlreadyClosed))
            }
        }
    }

    fn start_send(self: std::pin::Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        match self.get_mut() {
            SessionUpstream::Direct(transport) => transport.start_send_unpin(frame),
            SessionUpstream::Shared(hub) => hub.start_send_unpin(frame),
            SessionUpstream::Full => Err(proxy_core::TransportError::AlreadyClosed),
        }
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            SessionUpstream::Direct(transport) => transport.poll_flush_unpin(cx),
            SessionUpstream::Shared(hub) => hub.poll_flush_unpin(cx),
            SessionUpstream::Full => std::task::Poll::Ready(Ok(())),
        }
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        match self.get_mut() {
            SessionUpstream::Direct(transport) => transport.poll_close_unpin(cx),
            SessionUpstream::Shared(hub) => hub.poll_close_unpin(cx),
            SessionUpstream::Full => std::task::Poll::Ready(Ok(())),
        }
    }
}
