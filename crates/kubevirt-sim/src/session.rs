//! What happens on an upgraded WebSocket: the per-VM behaviours.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use crate::rfb::{Console, serve_rfb};

/// How long the closing handshake may take before the connection is dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
/// Largest binary message relayed from a byte stream in one piece.
const RELAY_CHUNK_BYTES: usize = 64 * 1024;
/// Buffer between the RFB server and its WebSocket relay.
const RFB_PIPE_BYTES: usize = 256 * 1024;

/// Traffic counters shared by all sessions, and the close frames clients sent.
#[derive(Debug, Default)]
pub(crate) struct Traffic {
    pub(crate) bytes_from_clients: AtomicU64,
    pub(crate) bytes_to_clients: AtomicU64,
    pub(crate) connections_accepted: AtomicU64,
    pub(crate) connections_open: AtomicU64,
    closes: Mutex<VecDeque<Option<(u16, String)>>>,
    record_limit: usize,
}

impl Traffic {
    pub(crate) fn new(record_limit: usize) -> Self {
        Self {
            record_limit,
            ..Self::default()
        }
    }

    pub(crate) fn connection_opened(&self) {
        self.connections_accepted.fetch_add(1, Ordering::Relaxed);
        self.connections_open.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn connection_closed(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    fn close_received(&self, frame: Option<&CloseFrame>) {
        let mut closes = self.closes.lock().unwrap_or_else(PoisonError::into_inner);
        closes.push_back(frame.map(|frame| (u16::from(frame.code), frame.reason.to_string())));
        while closes.len() > self.record_limit {
            closes.pop_front();
        }
    }

    /// Counts a message received from a client and records a close frame.
    fn incoming(&self, message: &Message) -> Incoming {
        match message {
            Message::Binary(bytes) => self.data_received(bytes.len()),
            Message::Text(text) => self.data_received(text.len()),
            Message::Close(frame) => {
                self.close_received(frame.as_ref());
                Incoming::Close
            }
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Incoming::Control,
        }
    }

    fn data_received(&self, length: usize) -> Incoming {
        self.received(length);
        Incoming::Data(length)
    }

    pub(crate) fn received_closes(&self) -> Vec<Option<(u16, String)>> {
        let closes = self.closes.lock().unwrap_or_else(PoisonError::into_inner);
        closes.iter().cloned().collect()
    }

    fn received(&self, bytes: usize) {
        self.bytes_from_clients
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }

    fn sent(&self, bytes: usize) {
        self.bytes_to_clients
            .fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// What a client's message was, once counted.
enum Incoming {
    /// A data message of this many payload bytes.
    Data(usize),
    /// A ping or pong.
    Control,
    /// A close frame (recorded).
    Close,
}

/// The behaviour chosen for an upgraded session, with what it needs.
pub(crate) enum SessionKind {
    Rfb {
        console: Arc<Console>,
        desktop_name: String,
    },
    Bridge(TcpStream),
    Echo {
        greeting: Option<Bytes>,
    },
    Closes {
        greeting: Option<Bytes>,
        code: u16,
        reason: String,
    },
    Sink,
    CountingSink {
        ack_after: u64,
    },
    SourceOnRequest {
        chunk_bytes: usize,
        total_bytes: u64,
    },
    Source {
        chunk_bytes: usize,
        total_bytes: Option<u64>,
    },
    ConsoleTraffic {
        update_every: Duration,
        update_bytes: usize,
        echo_bytes: usize,
        first_update_after: Duration,
    },
}

#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error("WebSocket failed")]
    WebSocket(#[from] tokio_tungstenite::tungstenite::Error),
    #[error("byte stream failed")]
    Io(#[from] std::io::Error),
}

/// Runs `kind` on `ws` until it ends, the client leaves or the simulator shuts down
/// (then the client gets close code 1001).
pub(crate) async fn run<S>(
    mut ws: WebSocketStream<S>,
    kind: SessionKind,
    traffic: &Traffic,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let outcome = tokio::select! {
        result = drive(&mut ws, kind, traffic) => Some(result),
        () = crate::server::stopping(&mut shutdown) => None,
    };
    let close_frame = match outcome {
        None => Some(CloseFrame {
            code: CloseCode::Away,
            reason: "kubevirt-sim is shutting down".into(),
        }),
        Some(Ok(())) => None,
        Some(Err(error)) => {
            tracing::debug!(error = %error, "session ended with an error");
            Some(CloseFrame {
                code: CloseCode::Error,
                reason: "kubevirt-sim session failed".into(),
            })
        }
    };
    let closing = async {
        // Errors here mean the peer is already gone or the close handshake already ran.
        let _ = ws.close(close_frame).await;
        while let Some(Ok(_)) = ws.next().await {}
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, closing).await;
}

async fn drive<S>(
    ws: &mut WebSocketStream<S>,
    kind: SessionKind,
    traffic: &Traffic,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match kind {
        SessionKind::Rfb {
            console,
            desktop_name,
        } => {
            let (relay_end, rfb_end) = tokio::io::duplex(RFB_PIPE_BYTES);
            let rfb = async {
                if let Err(error) = serve_rfb(rfb_end, console, &desktop_name).await {
                    tracing::debug!(error = %error, "RFB session ended with an error");
                }
            };
            let (relayed, ()) = tokio::join!(relay_bytes(ws, relay_end, traffic), rfb);
            relayed
        }
        SessionKind::Bridge(tcp) => {
            let _ = tcp.set_nodelay(true);
            relay_bytes(ws, tcp, traffic).await
        }
        SessionKind::Echo { greeting } => {
            greet(ws, greeting, traffic).await?;
            echo(ws, traffic).await
        }
        SessionKind::Closes {
            greeting,
            code,
            reason,
        } => {
            greet(ws, greeting, traffic).await?;
            let frame = CloseFrame {
                code: CloseCode::from(code),
                reason: reason.into(),
            };
            ws.close(Some(frame)).await?;
            // The client's reply ends the stream; anything before it is dropped.
            while let Some(message) = ws.next().await {
                traffic.incoming(&message?);
            }
            Ok(())
        }
        SessionKind::Sink => sink(ws, traffic).await,
        SessionKind::CountingSink { ack_after } => counting_sink(ws, ack_after, traffic).await,
        SessionKind::SourceOnRequest {
            chunk_bytes,
            total_bytes,
        } => source_on_request(ws, chunk_bytes, total_bytes, traffic).await,
        SessionKind::Source {
            chunk_bytes,
            total_bytes,
        } => source(ws, chunk_bytes, total_bytes, traffic).await,
        SessionKind::ConsoleTraffic {
            update_every,
            update_bytes,
            echo_bytes,
            first_update_after,
        } => {
            let shape = ConsoleShape {
                update_every,
                update_bytes,
                echo_bytes,
                first_update_after,
            };
            console_traffic(ws, shape, traffic).await
        }
    }
}

/// What a [`SessionKind::ConsoleTraffic`] session sends.
struct ConsoleShape {
    update_every: Duration,
    update_bytes: usize,
    echo_bytes: usize,
    first_update_after: Duration,
}

/// Whether a client message starts with a key press: an RFB KeyEvent (type 4) or a QEMU
/// extended key event (type 255, subtype 0) with its down flag set.
fn is_key_down(message: &[u8]) -> bool {
    match message {
        [4, down, ..] => *down != 0,
        [255, 0, high, low, ..] => *high != 0 || *low != 0,
        _ => false,
    }
}

/// A FramebufferUpdate-shaped message of `length` bytes (at least 2) whose padding byte is `tag`.
fn tagged_update(length: usize, tag: u8) -> Bytes {
    let mut message = vec![0u8; length.max(2)];
    message[1] = tag;
    Bytes::from(message)
}

/// Updates every `update_every` and an echo for every client message, until the client closes.
async fn console_traffic<S>(
    ws: &mut WebSocketStream<S>,
    shape: ConsoleShape,
    traffic: &Traffic,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let update = tagged_update(shape.update_bytes, 0);
    let echo = tagged_update(shape.echo_bytes, 1);
    let updating = !shape.update_every.is_zero();
    // A zero interval never ticks: the period is only read when `updating`.
    let period = if updating {
        shape.update_every
    } else {
        Duration::from_secs(3600)
    };
    let mut ticks = tokio::time::interval_at(
        tokio::time::Instant::now() + shape.first_update_after,
        period,
    );
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = ws.next() => {
                let Some(message) = message else { return Ok(()) };
                let message = message?;
                let key_down = matches!(&message, Message::Binary(data) if is_key_down(data));
                match traffic.incoming(&message) {
                    Incoming::Data(_) if key_down => {
                        ws.send(Message::Binary(echo.clone())).await?;
                        traffic.sent(echo.len());
                    }
                    Incoming::Data(_) | Incoming::Control => {}
                    Incoming::Close => return Ok(()),
                }
            }
            _ = ticks.tick(), if updating => {
                ws.send(Message::Binary(update.clone())).await?;
                traffic.sent(update.len());
            }
        }
    }
}

/// Sends the greeting, if any, as one binary message.
async fn greet<S>(
    ws: &mut WebSocketStream<S>,
    greeting: Option<Bytes>,
    traffic: &Traffic,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if let Some(greeting) = greeting {
        let length = greeting.len();
        ws.send(Message::Binary(greeting)).await?;
        traffic.sent(length);
    }
    Ok(())
}

/// Relays WebSocket message payloads into `stream` and `stream`'s bytes back as binary messages.
async fn relay_bytes<S, B>(
    ws: &mut WebSocketStream<S>,
    stream: B,
    traffic: &Traffic,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite,
{
    let (mut ws_out, mut ws_in) = ws.split();
    let (mut stream_in, mut stream_out) = tokio::io::split(stream);
    let client_to_stream = async {
        while let Some(message) = ws_in.next().await {
            let payload = match message? {
                Message::Binary(bytes) => bytes,
                Message::Text(text) => Bytes::from(text),
                Message::Close(frame) => {
                    traffic.close_received(frame.as_ref());
                    break;
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            };
            traffic.received(payload.len());
            stream_out.write_all(&payload).await?;
        }
        stream_out.shutdown().await?;
        Ok::<(), SessionError>(())
    };
    let stream_to_client = async {
        let mut buffer = vec![0u8; RELAY_CHUNK_BYTES];
        loop {
            let read = stream_in.read(&mut buffer).await?;
            if read == 0 {
                ws_out
                    .send(Message::Close(Some(CloseFrame {
                        code: CloseCode::Normal,
                        reason: "VNC server closed the connection".into(),
                    })))
                    .await?;
                return Ok::<(), SessionError>(());
            }
            ws_out
                .send(Message::Binary(Bytes::copy_from_slice(&buffer[..read])))
                .await?;
            traffic.sent(read);
        }
    };
    tokio::select! {
        result = client_to_stream => result,
        result = stream_to_client => result,
    }
}

async fn echo<S>(ws: &mut WebSocketStream<S>, traffic: &Traffic) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = ws.next().await {
        let message = message?;
        match traffic.incoming(&message) {
            Incoming::Data(length) => {
                ws.send(message).await?;
                traffic.sent(length);
            }
            Incoming::Control => {}
            Incoming::Close => break,
        }
    }
    Ok(())
}

async fn sink<S>(ws: &mut WebSocketStream<S>, traffic: &Traffic) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(message) = ws.next().await {
        if let Incoming::Close = traffic.incoming(&message?) {
            break;
        }
    }
    Ok(())
}

async fn counting_sink<S>(
    ws: &mut WebSocketStream<S>,
    ack_after: u64,
    traffic: &Traffic,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut received = 0u64;
    let mut acknowledged = false;
    while let Some(message) = ws.next().await {
        let length = match traffic.incoming(&message?) {
            Incoming::Data(length) => length,
            Incoming::Control => continue,
            Incoming::Close => break,
        };
        received += length as u64;
        if !acknowledged && received >= ack_after {
            let count = received.to_string();
            traffic.sent(count.len());
            ws.send(Message::text(count)).await?;
            acknowledged = true;
        }
    }
    Ok(())
}

async fn source_on_request<S>(
    ws: &mut WebSocketStream<S>,
    chunk_bytes: usize,
    total_bytes: u64,
    traffic: &Traffic,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let Some(message) = ws.next().await else {
            return Ok(());
        };
        match traffic.incoming(&message?) {
            Incoming::Data(_) => break,
            Incoming::Control => continue,
            Incoming::Close => return Ok(()),
        }
    }
    let chunk = Bytes::from(vec![0xA5; chunk_bytes]);
    let mut remaining = total_bytes;
    while remaining > 0 {
        let length = chunk_bytes.min(usize::try_from(remaining).unwrap_or(chunk_bytes));
        ws.feed(Message::Binary(chunk.slice(..length))).await?;
        traffic.sent(length);
        remaining -= length as u64;
    }
    ws.flush().await?;
    ws.close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "source done".into(),
    }))
    .await?;
    while let Some(message) = ws.next().await {
        traffic.incoming(&message?);
    }
    Ok(())
}

async fn source<S>(
    ws: &mut WebSocketStream<S>,
    chunk_bytes: usize,
    total_bytes: Option<u64>,
    traffic: &Traffic,
) -> Result<(), SessionError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let chunk = Bytes::from(
        (0..chunk_bytes)
            .map(|index| (index % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let (mut ws_out, mut ws_in) = ws.split();
    let send_all = async {
        let mut remaining = total_bytes;
        loop {
            let length = match remaining {
                Some(0) => break,
                Some(left) => chunk_bytes.min(usize::try_from(left).unwrap_or(chunk_bytes)),
                None => chunk_bytes,
            };
            ws_out.send(Message::Binary(chunk.slice(..length))).await?;
            traffic.sent(length);
            remaining = remaining.map(|left| left - length as u64);
        }
        ws_out.send(Message::Close(None)).await?;
        // The other branch reads the client's close reply; give up waiting after a while.
        tokio::time::sleep(CLOSE_TIMEOUT).await;
        Ok(())
    };
    let watch_client = async {
        while let Some(message) = ws_in.next().await {
            if let Incoming::Close = traffic.incoming(&message?) {
                break;
            }
        }
        Ok::<(), SessionError>(())
    };
    tokio::select! {
        result = send_all => result,
        result = watch_client => result,
    }
}
