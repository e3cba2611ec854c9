//! The upstream WebSocket server the load runs against: a stand-in for KubeVirt's VNC endpoint.
//!
//! Each connection picks its [`Mode`] from the VM name in the request path, so a proxy that dials
//! `{remote_url}/apis/subresources.kubevirt.io/v1alpha3/namespaces/{namespace}/virtualmachineinstances/{vmi}/vnc`
//! reaches the mode named by `{vmi}`. The server accepts the `plain.kubevirt.io` subprotocol (it
//! answers with it whenever a client offers it) and counts open TCP connections, so a run can
//! check that no upstream connection outlives its session.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Message};

use crate::LoadgenError;

/// The WebSocket subprotocol KubeVirt's VNC endpoint speaks.
pub const KUBEVIRT_SUBPROTOCOL: &str = "plain.kubevirt.io";

/// The path segment after which the VM name follows in KubeVirt's VNC URL.
const VMI_SEGMENT: &str = "virtualmachineinstances";

/// What the upstream does with one connection, chosen by the VM name.
///
/// | VM name | behaviour |
/// |---|---|
/// | `echo` | sends every data message back |
/// | `sink` | counts received bytes, never answers |
/// | `sink-BYTES` | counts received bytes; once `BYTES` arrived, answers one text message with the count |
/// | `source-MSGSIZE-BYTES` | waits for any first data message, then sends `BYTES` in `MSGSIZE`-byte binary messages as fast as it can, then closes with 1000 |
///
/// All names are valid DNS-1123 names, so a proxy's VM-name validation lets them through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// Send every data message back.
    Echo,
    /// Count received bytes; with `ack_after`, answer the count once that many bytes arrived.
    Sink {
        /// Bytes after which one text message with the count is sent back.
        ack_after: Option<u64>,
    },
    /// After the client's first data message, send `total_bytes` in `message_size`-byte messages, then close.
    Source {
        /// Payload bytes per message (the last one may be shorter).
        message_size: usize,
        /// Payload bytes in all.
        total_bytes: u64,
    },
}

impl Mode {
    /// The mode a request path asks for: the segment after `virtualmachineinstances` when there is
    /// one (KubeVirt's URL shape), otherwise the last non-empty segment (e.g. `/echo`).
    pub fn from_request_path(path: &str) -> Result<Mode, LoadgenError> {
        let path = path.split('?').next().unwrap_or_default();
        let segments: Vec<&str> = path
            .split('/')
            .filter(|segment| !segment.is_empty())
            .collect();
        let vmi = match segments.iter().position(|segment| *segment == VMI_SEGMENT) {
            Some(index) => segments.get(index + 1),
            None => segments.last(),
        };
        vmi.ok_or_else(|| LoadgenError::UnknownMode {
            name: path.to_owned(),
        })?
        .parse()
    }
}

impl FromStr for Mode {
    type Err = LoadgenError;

    fn from_str(name: &str) -> Result<Mode, LoadgenError> {
        let unknown = || LoadgenError::UnknownMode {
            name: name.to_owned(),
        };
        let mut parts = name.split('-');
        let mode = match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("echo"), None, None, None) => Mode::Echo,
            (Some("sink"), None, None, None) => Mode::Sink { ack_after: None },
            (Some("sink"), Some(bytes), None, None) => Mode::Sink {
                ack_after: Some(bytes.parse().map_err(|_| unknown())?),
            },
            (Some("source"), Some(size), Some(bytes), None) => {
                let message_size: usize = size.parse().map_err(|_| unknown())?;
                if message_size == 0 {
                    return Err(unknown());
                }
                Mode::Source {
                    message_size,
                    total_bytes: bytes.parse().map_err(|_| unknown())?,
                }
            }
            _ => return Err(unknown()),
        };
        Ok(mode)
    }
}

impl fmt::Display for Mode {
    /// The VM name that selects this mode.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Mode::Echo => f.write_str("echo"),
            Mode::Sink { ack_after: None } => f.write_str("sink"),
            Mode::Sink {
                ack_after: Some(bytes),
            } => write!(f, "sink-{bytes}"),
            Mode::Source {
                message_size,
                total_bytes,
            } => write!(f, "source-{message_size}-{total_bytes}"),
        }
    }
}

/// Live counters of the upstream server (all connections, all modes).
#[derive(Debug, Default)]
struct Counters {
    accepted: AtomicU64,
    open: AtomicU64,
    handshakes: AtomicU64,
    rejected: AtomicU64,
    subprotocol_offered: AtomicU64,
    bytes_received: AtomicU64,
    bytes_sent: AtomicU64,
}

/// A snapshot of the upstream server's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct UpstreamStats {
    /// TCP connections accepted since start.
    pub accepted: u64,
    /// TCP connections currently open (accepted and not yet dropped).
    pub open: u64,
    /// Completed WebSocket handshakes.
    pub handshakes: u64,
    /// Handshakes refused (unknown mode) or failed.
    pub rejected: u64,
    /// Handshakes whose client offered `plain.kubevirt.io`.
    pub subprotocol_offered: u64,
    /// Data payload bytes received, all modes.
    pub bytes_received: u64,
    /// Data payload bytes sent, all modes.
    pub bytes_sent: u64,
}

impl Counters {
    fn snapshot(&self) -> UpstreamStats {
        UpstreamStats {
            accepted: self.accepted.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
            handshakes: self.handshakes.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            subprotocol_offered: self.subprotocol_offered.load(Ordering::Relaxed),
            bytes_received: self.bytes_received.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
        }
    }
}

/// Decrements the open-connection count when a connection's task ends, however it ends.
struct OpenConnection(Arc<Counters>);

impl OpenConnection {
    fn new(counters: Arc<Counters>) -> Self {
        counters.accepted.fetch_add(1, Ordering::Relaxed);
        counters.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(counters)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A running upstream server; dropping it stops the server and closes all its connections.
#[derive(Debug)]
pub struct UpstreamServer {
    addr: SocketAddr,
    counters: Arc<Counters>,
    accept_task: JoinHandle<()>,
}

impl UpstreamServer {
    /// Binds `addr` (use port 0 for any free port) and starts serving on the current tokio runtime.
    pub async fn start(addr: SocketAddr) -> Result<UpstreamServer, LoadgenError> {
        let bind_error = |source| LoadgenError::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let counters = Arc::new(Counters::default());
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&counters)));
        Ok(UpstreamServer {
            addr,
            counters,
            accept_task,
        })
    }

    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The `ws://` base URL of the server, e.g. for a proxy's `WS_REMOTE_URL`.
    pub fn base_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> UpstreamStats {
        self.counters.snapshot()
    }

    /// Waits until no connection is open or `limit` passed; returns how many are still open.
    pub async fn wait_until_idle(&self, limit: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let open = self.counters.open.load(Ordering::Relaxed);
            if open == 0 || tokio::time::Instant::now() >= deadline {
                return open;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for UpstreamServer {
    fn drop(&mut self) {
        // The accept task owns the connection tasks' JoinSet, so aborting it closes every connection.
        self.accept_task.abort();
    }
}

async fn accept_loop(listener: TcpListener, counters: Arc<Counters>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    let open = OpenConnection::new(Arc::clone(&counters));
                    connections.spawn(serve_connection(stream, open));
                }
                Err(error) => {
                    // Typically EMFILE under the idle scenario; back off instead of spinning.
                    tracing::warn!(%error, "upstream accept failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
            Some(_finished) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Whether a `Sec-WebSocket-Protocol` request header list offers the KubeVirt subprotocol.
fn offers_kubevirt_subprotocol(request: &Request) -> bool {
    request
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .any(|protocol| protocol.trim() == KUBEVIRT_SUBPROTOCOL)
}

async fn serve_connection(stream: TcpStream, open: OpenConnection) {
    let counters = Arc::clone(&open.0);
    // Nagle would add delayed-ACK stalls to every small echo; failure to set it only costs speed.
    let _ = stream.set_nodelay(true);
    let mut chosen_mode = None;
    // The refusal type is tungstenite's; its size is not ours to choose.
    #[allow(clippy::result_large_err)]
    let choose_mode =
        |request: &Request, mut response: Response| -> Result<Response, ErrorResponse> {
            let mode = Mode::from_request_path(request.uri().path()).map_err(|error| {
                let mut refusal = ErrorResponse::new(Some(error.to_string()));
                *refusal.status_mut() = StatusCode::NOT_FOUND;
                refusal
            })?;
            if offers_kubevirt_subprotocol(request) {
                counters.subprotocol_offered.fetch_add(1, Ordering::Relaxed);
                response.headers_mut().insert(
                    header::SEC_WEBSOCKET_PROTOCOL,
                    HeaderValue::from_static(KUBEVIRT_SUBPROTOCOL),
                );
            }
            chosen_mode = Some(mode);
            Ok(response)
        };
    let websocket = match tokio_tungstenite::accept_hdr_async(stream, choose_mode).await {
        Ok(websocket) => websocket,
        Err(_) => {
            counters.rejected.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let Some(mode) = chosen_mode else {
        counters.rejected.fetch_add(1, Ordering::Relaxed);
        return;
    };
    counters.handshakes.fetch_add(1, Ordering::Relaxed);
    // Errors end the connection; a vanished peer is an ordinary outcome for a load generator.
    let _ = match mode {
        Mode::Echo => echo(websocket, &counters).await,
        Mode::Sink { ack_after } => sink(websocket, ack_after, &counters).await,
        Mode::Source {
            message_size,
            total_bytes,
        } => source(websocket, message_size, total_bytes, &counters).await,
    };
    drop(open);
}

type ServerSocket = WebSocketStream<TcpStream>;
type ServerResult = Result<(), tokio_tungstenite::tungstenite::Error>;

fn payload_len(message: &Message) -> Option<u64> {
    match message {
        Message::Binary(bytes) => Some(bytes.len() as u64),
        Message::Text(text) => Some(text.len() as u64),
        _ => None,
    }
}

async fn echo(mut websocket: ServerSocket, counters: &Counters) -> ServerResult {
    while let Some(message) = websocket.next().await {
        let message = message?;
        if let Some(len) = payload_len(&message) {
            counters.bytes_received.fetch_add(len, Ordering::Relaxed);
            websocket.send(message).await?;
            counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
        }
    }
    Ok(())
}

async fn sink(
    mut websocket: ServerSocket,
    ack_after: Option<u64>,
    counters: &Counters,
) -> ServerResult {
    let mut received = 0u64;
    let mut acknowledged = false;
    while let Some(message) = websocket.next().await {
        let Some(len) = payload_len(&message?) else {
            continue;
        };
        received += len;
        counters.bytes_received.fetch_add(len, Ordering::Relaxed);
        if !acknowledged && ack_after.is_some_and(|expected| received >= expected) {
            websocket.send(Message::text(received.to_string())).await?;
            acknowledged = true;
        }
    }
    Ok(())
}

async fn source(
    mut websocket: ServerSocket,
    message_size: usize,
    total_bytes: u64,
    counters: &Counters,
) -> ServerResult {
    // The client's first data message is the start signal, so all sessions of a run start together.
    loop {
        match websocket.next().await {
            Some(Ok(message)) if payload_len(&message).is_some() => break,
            Some(Ok(_)) => continue,
            Some(Err(error)) => return Err(error),
            None => return Ok(()),
        }
    }
    let payload = Bytes::from(vec![0xA5; message_size]);
    let mut remaining = total_bytes;
    while remaining > 0 {
        let len = remaining.min(message_size as u64);
        // `len <= message_size`, a usize.
        let chunk = payload.slice(..len as usize);
        websocket.feed(Message::Binary(chunk)).await?;
        counters.bytes_sent.fetch_add(len, Ordering::Relaxed);
        remaining -= len;
    }
    websocket.flush().await?;
    websocket
        .close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "source done".into(),
        }))
        .await?;
    while let Some(message) = websocket.next().await {
        message?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_names_round_trip() {
        for mode in [
            Mode::Echo,
            Mode::Sink { ack_after: None },
            Mode::Sink {
                ack_after: Some(1 << 30),
            },
            Mode::Source {
                message_size: 65536,
                total_bytes: 1 << 30,
            },
        ] {
            assert_eq!(mode.to_string().parse::<Mode>().unwrap(), mode);
        }
    }

    #[test]
    fn mode_comes_from_the_vmi_segment_of_a_kubevirt_path() {
        let path = "/apis/subresources.kubevirt.io/v1alpha3/namespaces/lab/virtualmachineinstances/source-1024-4096/vnc";
        assert_eq!(
            Mode::from_request_path(path).unwrap(),
            Mode::Source {
                message_size: 1024,
                total_bytes: 4096
            }
        );
        assert_eq!(Mode::from_request_path("/echo?x=1").unwrap(), Mode::Echo);
    }

    #[test]
    fn malformed_mode_names_are_refused() {
        for name in [
            "",
            "echo-1",
            "sink-x",
            "source-0-10",
            "source-10",
            "source-1-2-3",
            "vnc",
        ] {
            assert!(name.parse::<Mode>().is_err(), "{name} should be refused");
        }
    }
}
