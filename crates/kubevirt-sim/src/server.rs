//! The simulated API server: listener, TLS, the upgrade decision and session bookkeeping.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::header::{AUTHORIZATION, CONTENT_TYPE, SEC_WEBSOCKET_PROTOCOL};
use http::{HeaderValue, StatusCode};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::Bytes;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

use crate::config::{BearerCheck, SimConfig, TlsSetting, VmBehavior, VmSpec};
use crate::rfb::Console;
use crate::session::{self, SessionKind, Traffic};
use crate::status::{self, Refusal};
use crate::{SimError, tls};

/// The subprotocol KubeVirt's VNC subresource speaks (raw bytes in binary frames).
pub const PLAIN_SUBPROTOCOL: &str = proxy_wire::subprotocol::KUBEVIRT_PLAIN;
/// Time open sessions get to close after [`KubevirtSim::shutdown`] before they are cut.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// Time allowed to dial a [`VmBehavior::TcpBridge`] target.
const BRIDGE_DIAL_TIMEOUT: Duration = Duration::from_secs(2);
/// Pause after a failed `accept` (for example when out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How the `Authorization` header of a request compared with the expected bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthorizationOutcome {
    /// No bearer check is configured, and the request carried no `Authorization` header.
    NotChecked,
    /// No bearer check is configured, but the request carried an `Authorization` header
    /// (recorded, not refused: what a dev-mode client must never send).
    UncheckedHeader,
    /// The bearer token matched.
    Matched,
    /// The request had no `Authorization: Bearer` header.
    Missing,
    /// The request carried a different token (or the token file could not be read).
    Mismatched,
}

/// One request the simulator received, for test assertions. Never holds the token itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    /// Request path, without the query.
    pub path: String,
    /// Raw query string, if any.
    pub query: Option<String>,
    /// API version from the path (`v1alpha3` or `v1`) when the path is a VNC subresource.
    pub api_version: Option<String>,
    /// Namespace from the path.
    pub namespace: Option<String>,
    /// VMI name from the path.
    pub vmi: Option<String>,
    /// `preserveSession` as virt-api reads it (Go `strconv.ParseBool`; absent or invalid is false).
    pub preserve_session: bool,
    /// How the bearer token compared.
    pub authorization: AuthorizationOutcome,
    /// Subprotocols the client offered, in order.
    pub offered_subprotocols: Vec<String>,
    /// The subprotocol the simulator selected.
    pub selected_subprotocol: Option<String>,
    /// The HTTP status answered: 101 for an upgrade, otherwise the refusal.
    pub status: u16,
    /// Whether the request came over TLS.
    pub tls: bool,
}

/// Counters of the simulator's sessions and traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SimStats {
    /// Sessions upgraded since start.
    pub sessions_opened: u64,
    /// Sessions open now.
    pub sessions_open: usize,
    /// Payload bytes received from clients.
    pub bytes_from_clients: u64,
    /// Payload bytes sent to clients.
    pub bytes_to_clients: u64,
    /// Upgrade requests answered with an error status instead of 101.
    pub upgrades_refused: u64,
    /// Upgrades where the client offered `plain.kubevirt.io` and got it.
    pub subprotocol_selected: u64,
    /// TCP connections accepted since start.
    pub connections_accepted: u64,
    /// TCP connections open now (upgraded or not): a client that leaves none open closed all.
    pub connections_open: u64,
}

/// A running simulated KubeVirt API. Dropping it stops the server at once; [`shutdown`](Self::shutdown)
/// closes open sessions politely (close code 1001) first.
pub struct KubevirtSim {
    local_addr: SocketAddr,
    ca_pem: Option<String>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    server_task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for KubevirtSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubevirtSim")
            .field("local_addr", &self.local_addr)
            .field("tls", &self.ca_pem.is_some())
            .finish_non_exhaustive()
    }
}

struct Shared {
    bearer: BearerCheck,
    vms: Vec<VmSpec>,
    consoles: HashMap<usize, Arc<Console>>,
    max_sessions: usize,
    handshake_timeout: Duration,
    record_limit: usize,
    requests: Mutex<VecDeque<RecordedRequest>>,
    open_sessions: watch::Sender<usize>,
    sessions_opened: AtomicU64,
    upgrades_refused: AtomicU64,
    subprotocol_selected: AtomicU64,
    traffic: Traffic,
    greeting: Option<Bytes>,
    path_prefix: String,
}

/// Counts one open TCP connection while it lives.
struct ConnectionGuard(Arc<Shared>);

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.traffic.connection_closed();
    }
}

/// Holds one slot of the open-session count while it lives.
struct SessionSlot {
    shared: Arc<Shared>,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        self.shared
            .open_sessions
            .send_modify(|open| *open = open.saturating_sub(1));
    }
}

/// What the upgrade callback decided to run once the handshake completes.
struct Upgrade {
    kind: PreparedKind,
    _slot: SessionSlot,
}

enum PreparedKind {
    Ready(SessionKind),
    Bridge(std::net::TcpStream),
}

impl KubevirtSim {
    /// Binds the listener, generates the TLS material when asked and starts serving.
    pub async fn start(config: SimConfig) -> Result<Self, SimError> {
        let (ca_pem, server_config) = match &config.tls {
            TlsSetting::Off => (None, None),
            TlsSetting::Generated => {
                let generated = tls::generate()?;
                (Some(generated.ca_pem), Some(generated.server_config))
            }
            TlsSetting::Given(server_config) => (None, Some(Arc::clone(server_config))),
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| SimError::Bind {
                addr: config.listen,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(SimError::LocalAddr)?;
        let consoles = config
            .vms
            .iter()
            .enumerate()
            .filter(|(_, spec)| spec.behavior == VmBehavior::Rfb)
            .map(|(index, spec)| (index, Arc::new(Console::new(&spec.name, &config.rfb))))
            .collect();
        let shared = Arc::new(Shared {
            bearer: config.bearer,
            vms: config.vms,
            consoles,
            max_sessions: config.max_sessions,
            handshake_timeout: config.handshake_timeout,
            record_limit: config.record_limit,
            requests: Mutex::new(VecDeque::new()),
            open_sessions: watch::channel(0).0,
            sessions_opened: AtomicU64::new(0),
            upgrades_refused: AtomicU64::new(0),
            subprotocol_selected: AtomicU64::new(0),
            traffic: Traffic::new(config.record_limit),
            greeting: config.greeting.map(Bytes::from),
            path_prefix: config.path_prefix,
        });
        let (shutdown, shutdown_signal) = watch::channel(false);
        let tls = server_config.is_some();
        let acceptor = server_config.map(TlsAcceptor::from);
        let server_task = tokio::spawn(accept_loop(
            listener,
            acceptor,
            Arc::clone(&shared),
            shutdown_signal,
        ));
        tracing::info!(%local_addr, tls, "kubevirt-sim listening");
        Ok(Self {
            local_addr,
            ca_pem,
            shared,
            shutdown,
            server_task: Some(server_task),
        })
    }

    /// The bound address (the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `wss://127.0.0.1:PORT` with TLS, else `ws://127.0.0.1:PORT`: the remote URL a proxy dials.
    pub fn base_url(&self) -> String {
        let scheme = if self.ca_pem.is_some() { "wss" } else { "ws" };
        format!("{scheme}://{}", self.local_addr)
    }

    /// The VNC subresource path KubeVirt serves for `vmi` in `namespace` (API version `v1alpha3`).
    pub fn vnc_path(namespace: &str, vmi: &str) -> String {
        proxy_upstream::DEFAULT_API_PATH
            .replace("{namespace}", namespace)
            .replace("{vmi_name}", vmi)
    }

    /// The generated CA certificate in PEM, when serving TLS.
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    /// Writes the CA certificate (PEM) to `path`, for clients that read a CA file.
    pub fn write_ca_pem(&self, path: impl AsRef<Path>) -> Result<(), SimError> {
        let path = path.as_ref();
        let pem = self.ca_pem.as_deref().ok_or(SimError::NoTls)?;
        std::fs::write(path, pem).map_err(|source| SimError::WriteCa {
            path: path.to_owned(),
            source,
        })
    }

    /// The requests received so far (the most recent ones, up to the record limit).
    pub fn requests(&self) -> Vec<RecordedRequest> {
        let requests = self
            .shared
            .requests
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        requests.iter().cloned().collect()
    }

    /// Sessions open right now.
    pub fn open_sessions(&self) -> usize {
        *self.shared.open_sessions.borrow()
    }

    /// Waits until no session is open, at most `limit`; returns whether that happened.
    pub async fn wait_for_no_open_sessions(&self, limit: Duration) -> bool {
        let mut open = self.shared.open_sessions.subscribe();
        tokio::time::timeout(limit, open.wait_for(|open| *open == 0))
            .await
            .is_ok_and(|waited| waited.is_ok())
    }

    /// Session and traffic counters.
    pub fn stats(&self) -> SimStats {
        SimStats {
            sessions_opened: self.shared.sessions_opened.load(Ordering::Relaxed),
            sessions_open: self.open_sessions(),
            bytes_from_clients: self
                .shared
                .traffic
                .bytes_from_clients
                .load(Ordering::Relaxed),
            bytes_to_clients: self.shared.traffic.bytes_to_clients.load(Ordering::Relaxed),
            upgrades_refused: self.shared.upgrades_refused.load(Ordering::Relaxed),
            subprotocol_selected: self.shared.subprotocol_selected.load(Ordering::Relaxed),
            connections_accepted: self
                .shared
                .traffic
                .connections_accepted
                .load(Ordering::Relaxed),
            connections_open: self.shared.traffic.connections_open.load(Ordering::Relaxed),
        }
    }

    /// The close frames clients sent, oldest first (`None`: a close without a status code),
    /// at most [`SimConfig::record_limit`] of them.
    pub fn received_closes(&self) -> Vec<Option<(u16, String)>> {
        self.shared.traffic.received_closes()
    }

    /// The screen of an [`VmBehavior::Rfb`] VMI served in every namespace (or, failing that, in
    /// any one namespace), to check what clients see.
    pub fn console(&self, vmi: &str) -> Option<Arc<Console>> {
        let mut matching: Vec<(usize, &VmSpec)> = self
            .shared
            .vms
            .iter()
            .enumerate()
            .filter(|(_, spec)| spec.name == vmi)
            .collect();
        matching.sort_by_key(|(_, spec)| spec.namespace.is_some());
        matching
            .first()
            .and_then(|(index, _)| self.shared.consoles.get(index).cloned())
    }

    /// Stops accepting, closes open sessions with code 1001 and waits for them (a few seconds
    /// at most, then they are cut).
    pub async fn shutdown(mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.server_task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for KubevirtSim {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
        if let Some(task) = self.server_task.take() {
            task.abort();
        }
    }
}

/// Resolves once shutdown was asked for (or its sender is gone).
pub(crate) async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here.
    let _ = shutdown.wait_for(|stopping| *stopping).await;
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let session_shutdown = shutdown.clone();
    loop {
        tokio::select! {
            () = stopping(&mut shutdown) => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    tracing::debug!(%peer, "connection accepted");
                    connections.spawn(handle_connection(
                        tcp,
                        acceptor.clone(),
                        Arc::clone(&shared),
                        session_shutdown.clone(),
                    ));
                }
                Err(error) => {
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            left = connections.len(),
            "sessions did not close in time; cutting them"
        );
        connections.shutdown().await;
    }
}

async fn handle_connection(
    tcp: TcpStream,
    acceptor: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) {
    let _ = tcp.set_nodelay(true);
    shared.traffic.connection_opened();
    let _open = ConnectionGuard(Arc::clone(&shared));
    match acceptor {
        None => serve_upgrade(tcp, false, shared, shutdown).await,
        Some(acceptor) => {
            match tokio::time::timeout(shared.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(tls_stream)) => serve_upgrade(tls_stream, true, shared, shutdown).await,
                Ok(Err(error)) => tracing::debug!(%error, "TLS handshake failed"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            }
        }
    }
}

async fn serve_upgrade<S>(
    stream: S,
    tls: bool,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut upgrade = None;
    // The error type is tungstenite's `ErrorResponse`, an `http::Response`; it is not ours to shrink.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        let (answer, decided) = decide(&shared, request, response, tls);
        upgrade = decided;
        answer
    };
    let handshake = tokio_tungstenite::accept_hdr_async(stream, callback);
    let ws = match tokio::time::timeout(shared.handshake_timeout, handshake).await {
        Ok(Ok(ws)) => ws,
        Ok(Err(error)) => {
            tracing::debug!(%error, "WebSocket handshake ended without an upgrade");
            return;
        }
        Err(_) => {
            tracing::debug!("WebSocket handshake timed out");
            return;
        }
    };
    let Some(Upgrade { kind, _slot }) = upgrade else {
        return;
    };
    let kind = match kind {
        PreparedKind::Ready(kind) => kind,
        PreparedKind::Bridge(std_tcp) => match TcpStream::from_std(std_tcp) {
            Ok(tcp) => SessionKind::Bridge(tcp),
            Err(error) => {
                tracing::warn!(%error, "cannot register the bridged TCP connection");
                return;
            }
        },
    };
    shared.sessions_opened.fetch_add(1, Ordering::Relaxed);
    session::run(ws, kind, &shared.traffic, shutdown).await;
}

/// The parsed VNC subresource path.
#[derive(Debug, PartialEq, Eq)]
struct VncPath<'a> {
    api_version: &'a str,
    namespace: &'a str,
    vmi: &'a str,
}

fn parse_vnc_path(path: &str) -> Option<VncPath<'_>> {
    let mut segments = path.strip_prefix('/')?.split('/');
    let expected = |segment: Option<&str>, word: &str| segment == Some(word);
    if !expected(segments.next(), "apis") || !expected(segments.next(), "subresources.kubevirt.io")
    {
        return None;
    }
    let api_version = segments
        .next()
        .filter(|v| matches!(*v, "v1alpha3" | "v1"))?;
    if !expected(segments.next(), "namespaces") {
        return None;
    }
    let namespace = segments.next().filter(|s| !s.is_empty())?;
    if !expected(segments.next(), "virtualmachineinstances") {
        return None;
    }
    let vmi = segments.next().filter(|s| !s.is_empty())?;
    if !expected(segments.next(), "vnc") || segments.next().is_some() {
        return None;
    }
    Some(VncPath {
        api_version,
        namespace,
        vmi,
    })
}

/// Go's `strconv.ParseBool`, with errors read as false (as virt-api does).
fn go_parse_bool(text: &str) -> bool {
    matches!(text, "1" | "t" | "T" | "TRUE" | "true" | "True")
}

fn query_value<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(name, _)| *name == key)
        .map(|(_, value)| value)
}

fn offered_subprotocols(request: &Request) -> Vec<String> {
    request
        .headers()
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|protocol| protocol.trim().to_owned())
        .filter(|protocol| !protocol.is_empty())
        .collect()
}

/// Compares without stopping at the first differing byte.
fn same_secret(presented: &[u8], expected: &[u8]) -> bool {
    presented.len() == expected.len()
        && presented
            .iter()
            .zip(expected)
            .fold(0u8, |difference, (a, b)| difference | (a ^ b))
            == 0
}

fn check_bearer(check: &BearerCheck, request: &Request) -> AuthorizationOutcome {
    let expected: Vec<String> = match check {
        BearerCheck::None if request.headers().contains_key(AUTHORIZATION) => {
            return AuthorizationOutcome::UncheckedHeader;
        }
        BearerCheck::None => return AuthorizationOutcome::NotChecked,
        BearerCheck::Token(token) => vec![token.trim().to_owned()],
        // A small local file, read synchronously inside tungstenite's synchronous callback.
        BearerCheck::TokenFile(path) => match std::fs::read_to_string(path) {
            Ok(tokens) => tokens
                .lines()
                .map(str::trim)
                .filter(|token| !token.is_empty())
                .map(str::to_owned)
                .collect(),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "cannot read the expected token file");
                return AuthorizationOutcome::Mismatched;
            }
        },
    };
    let presented = request
        .headers()
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match presented {
        None => AuthorizationOutcome::Missing,
        Some(token)
            if expected.iter().any(|expected| {
                !expected.is_empty() && same_secret(token.as_bytes(), expected.as_bytes())
            }) =>
        {
            AuthorizationOutcome::Matched
        }
        Some(_) => AuthorizationOutcome::Mismatched,
    }
}

fn refuse(refusal: Refusal) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(refusal.body));
    *response.status_mut() =
        StatusCode::from_u16(refusal.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Decides the fate of one upgrade request, records it and prepares the session.
fn decide(
    shared: &Arc<Shared>,
    request: &Request,
    mut response: Response,
    tls: bool,
) -> (Result<Response, ErrorResponse>, Option<Upgrade>) {
    let path = request.uri().path();
    let query = request.uri().query();
    let parsed = path
        .strip_prefix(shared.path_prefix.as_str())
        .and_then(parse_vnc_path);
    let offered = offered_subprotocols(request);
    let authorization = check_bearer(&shared.bearer, request);
    let mut record = RecordedRequest {
        path: path.to_owned(),
        query: query.map(str::to_owned),
        api_version: parsed.as_ref().map(|p| p.api_version.to_owned()),
        namespace: parsed.as_ref().map(|p| p.namespace.to_owned()),
        vmi: parsed.as_ref().map(|p| p.vmi.to_owned()),
        preserve_session: query_value(query, "preserveSession").is_some_and(go_parse_bool),
        authorization,
        offered_subprotocols: offered.clone(),
        selected_subprotocol: None,
        status: 101,
        tls,
    };
    let outcome = route(shared, parsed.as_ref(), authorization);
    let result = match outcome {
        Err(refusal) => {
            record.status = refusal.code;
            shared.upgrades_refused.fetch_add(1, Ordering::Relaxed);
            tracing::info!(path, status = refusal.code, "request refused");
            (Err(refuse(refusal)), None)
        }
        Ok(upgrade) => {
            if offered.iter().any(|protocol| protocol == PLAIN_SUBPROTOCOL) {
                response.headers_mut().insert(
                    SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(PLAIN_SUBPROTOCOL),
                );
                record.selected_subprotocol = Some(PLAIN_SUBPROTOCOL.to_owned());
                shared.subprotocol_selected.fetch_add(1, Ordering::Relaxed);
            }
            tracing::info!(path, "upgrading");
            (Ok(response), Some(upgrade))
        }
    };
    let mut requests = shared
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    requests.push_back(record);
    while requests.len() > shared.record_limit {
        requests.pop_front();
    }
    result
}

fn route(
    shared: &Arc<Shared>,
    parsed: Option<&VncPath<'_>>,
    authorization: AuthorizationOutcome,
) -> Result<Upgrade, Refusal> {
    if matches!(
        authorization,
        AuthorizationOutcome::Missing | AuthorizationOutcome::Mismatched
    ) {
        return Err(status::unauthorized());
    }
    let path = parsed.ok_or_else(status::unknown_path)?;
    let (index, spec) = shared
        .vms
        .iter()
        .enumerate()
        .filter(|(_, spec)| spec.name == path.vmi)
        .filter(|(_, spec)| {
            spec.namespace
                .as_deref()
                .is_none_or(|ns| ns == path.namespace)
        })
        .max_by_key(|(_, spec)| spec.namespace.is_some())
        .ok_or_else(|| status::vmi_not_found(path.vmi))?;
    let plan = match &spec.behavior {
        VmBehavior::Forbidden => return Err(status::forbidden(path.namespace, path.vmi)),
        VmBehavior::NotRunning => return Err(status::vmi_not_running()),
        VmBehavior::Rfb => {
            let console = shared
                .consoles
                .get(&index)
                .cloned()
                .ok_or_else(|| status::vnc_unreachable(path.vmi, "the VM has no console"))?;
            Plan::Ready(SessionKind::Rfb {
                console,
                desktop_name: format!("ws-proxy test VM ({})", path.vmi),
            })
        }
        VmBehavior::Echo => Plan::Ready(SessionKind::Echo {
            greeting: shared.greeting.clone(),
        }),
        VmBehavior::Closes { code, reason } => Plan::Ready(SessionKind::Closes {
            greeting: shared.greeting.clone(),
            code: *code,
            reason: reason.clone(),
        }),
        VmBehavior::Sink => Plan::Ready(SessionKind::Sink),
        VmBehavior::CountingSink { ack_after } => Plan::Ready(SessionKind::CountingSink {
            ack_after: *ack_after,
        }),
        VmBehavior::SourceOnRequest {
            chunk_bytes,
            total_bytes,
        } => Plan::Ready(SessionKind::SourceOnRequest {
            chunk_bytes: *chunk_bytes,
            total_bytes: *total_bytes,
        }),
        VmBehavior::Source {
            chunk_bytes,
            total_bytes,
        } => Plan::Ready(SessionKind::Source {
            chunk_bytes: *chunk_bytes,
            total_bytes: *total_bytes,
        }),
        VmBehavior::ConsoleTraffic {
            update_every,
            update_bytes,
            echo_bytes,
        } => Plan::Ready(SessionKind::ConsoleTraffic {
            update_every: *update_every,
            update_bytes: *update_bytes,
            echo_bytes: *echo_bytes,
            first_update_after: update_every.mul_f64(spread_fraction(
                shared.sessions_opened.load(Ordering::Relaxed),
            )),
        }),
        VmBehavior::TcpBridge(target) => Plan::Dial(*target),
    };
    let slot = reserve_slot(shared)?;
    let kind = match plan {
        Plan::Ready(kind) => PreparedKind::Ready(kind),
        Plan::Dial(target) => PreparedKind::Bridge(
            dial_bridge(target)
                .map_err(|error| status::vnc_unreachable(path.vmi, &error.to_string()))?,
        ),
    };
    Ok(Upgrade { kind, _slot: slot })
}

/// A session about to be prepared once a slot is reserved.
enum Plan {
    Ready(SessionKind),
    Dial(SocketAddr),
}

/// Dials the real VNC server before the upgrade, as virt-api dials virt-handler first; the
/// upgrade callback is synchronous, so this is a blocking connect with a short timeout.
fn dial_bridge(target: SocketAddr) -> std::io::Result<std::net::TcpStream> {
    let tcp = std::net::TcpStream::connect_timeout(&target, BRIDGE_DIAL_TIMEOUT)?;
    tcp.set_nonblocking(true)?;
    Ok(tcp)
}

/// The `n`th of a sequence of fractions in [0, 1) that spreads evenly however long it runs
/// (multiples of the golden ratio): consoles opened together do not update in step.
fn spread_fraction(n: u64) -> f64 {
    const GOLDEN_FRACTION: f64 = 0.618_033_988_749_895;
    (n as f64 * GOLDEN_FRACTION).fract()
}

fn reserve_slot(shared: &Arc<Shared>) -> Result<SessionSlot, Refusal> {
    let mut reserved = false;
    shared.open_sessions.send_if_modified(|open| {
        if *open < shared.max_sessions {
            *open += 1;
            reserved = true;
        }
        reserved
    });
    if reserved {
        Ok(SessionSlot {
            shared: Arc::clone(shared),
        })
    } else {
        Err(status::at_capacity(shared.max_sessions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_vnc_paths_of_both_api_versions() {
        assert_eq!(
            parse_vnc_path(
                "/apis/subresources.kubevirt.io/v1alpha3/namespaces/lab/virtualmachineinstances/vm-1/vnc"
            ),
            Some(VncPath {
                api_version: "v1alpha3",
                namespace: "lab",
                vmi: "vm-1"
            })
        );
        assert!(
            parse_vnc_path(
                "/apis/subresources.kubevirt.io/v1/namespaces/lab/virtualmachineinstances/vm-1/vnc"
            )
            .is_some()
        );
        for wrong in [
            "/",
            "/apis/subresources.kubevirt.io/v2/namespaces/lab/virtualmachineinstances/vm-1/vnc",
            "/apis/subresources.kubevirt.io/v1/namespaces/lab/virtualmachineinstances/vm-1/console",
            "/apis/subresources.kubevirt.io/v1/namespaces//virtualmachineinstances/vm-1/vnc",
            "/apis/subresources.kubevirt.io/v1/namespaces/lab/virtualmachineinstances/vm-1/vnc/extra",
            "/api/v1/namespaces/lab/pods",
        ] {
            assert_eq!(parse_vnc_path(wrong), None, "{wrong}");
        }
    }

    #[test]
    fn reads_preserve_session_like_go() {
        assert!(
            query_value(Some("preserveSession=true"), "preserveSession").is_some_and(go_parse_bool)
        );
        assert!(
            query_value(Some("a=b&preserveSession=1"), "preserveSession")
                .is_some_and(go_parse_bool)
        );
        assert!(
            !query_value(Some("preserveSession=yes"), "preserveSession").is_some_and(go_parse_bool)
        );
        assert!(!query_value(Some("other=true"), "preserveSession").is_some_and(go_parse_bool));
        assert!(!query_value(None, "preserveSession").is_some_and(go_parse_bool));
    }

    #[test]
    fn secret_comparison_needs_equal_length_and_bytes() {
        assert!(same_secret(b"token", b"token"));
        assert!(!same_secret(b"token", b"tokeN"));
        assert!(!same_secret(b"token", b"token2"));
    }
}
