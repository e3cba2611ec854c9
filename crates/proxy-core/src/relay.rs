//! The relay loop: two pumps (client to upstream, upstream to client) driven by one future,
//! session timers, and the closing handshake.
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::poll_fn;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::{Instant, Sleep, sleep, sleep_until};

use crate::{CloseFrame, Frame, FrameTransport, TransportError, close_code};

/// Close reasons the relay sends when it ends a session itself.
pub mod close_reason {
    /// Sent with 1001 to both sides when the server shuts down.
    pub const SHUTDOWN: &str = "going away";
    /// Sent with 1001 to both sides when no data moved for the idle timeout.
    pub const IDLE_TIMEOUT: &str = "idle timeout";
    /// Sent with 1001 to both sides when the maximum session lifetime is reached.
    pub const MAX_LIFETIME: &str = "session lifetime exceeded";
    /// Sent to the client (1011) and the upstream (1001) when the client missed a keepalive pong.
    pub const KEEPALIVE_TIMEOUT: &str = "keepalive ping timeout";
    /// Sent to the client (1011) and the upstream (1001) when the upstream missed a keepalive
    /// pong (its host vanished without closing the connection).
    pub const UPSTREAM_KEEPALIVE_TIMEOUT: &str = "upstream keepalive ping timeout";
    /// Sent with 1001 to the upstream when the client vanished without a close frame.
    pub const CLIENT_GONE: &str = "client went away";
    /// Sent with 1001 to the client when the upstream vanished without a close frame.
    pub const UPSTREAM_GONE: &str = "upstream went away";
    /// Sent with 1011 to the upstream when the client connection failed.
    pub const CLIENT_ERROR: &str = "client connection error";
    /// Sent with 1011 to the client when the upstream connection failed.
    pub const UPSTREAM_ERROR: &str = "upstream connection error";
    /// Sent with 1002 to a side that violated the WebSocket protocol.
    pub const PROTOCOL_ERROR: &str = "protocol error";
    /// Sent with 1007 to a side that sent text that is not UTF-8.
    pub const INVALID_PAYLOAD: &str = "invalid UTF-8 text";
    /// Sent with 1009 to a side that sent a message over the size limit.
    pub const MESSAGE_TOO_BIG: &str = "message too big";
}

/// Which side of a relayed session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The browser / WebSocket client that connected to the proxy.
    Client,
    /// The KubeVirt VNC subresource the proxy dialled.
    Upstream,
}

impl Side {
    /// `"client"` or `"upstream"`, for logs and metrics labels.
    pub fn label(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Upstream => "upstream",
        }
    }
}

/// Keepalive pings sent towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Time from the session start, or from the last answered ping, to the next ping.
    pub interval: Duration,
    /// How long to wait for the pong before the client is considered gone.
    pub timeout: Duration,
}

impl Default for Keepalive {
    /// 20 s interval and 20 s deadline, the defaults of the Python original's `websockets` library.
    fn default() -> Self {
        Keepalive {
            interval: Duration::from_secs(20),
            timeout: Duration::from_secs(20),
        }
    }
}

/// Settings of one relayed session. Every timer is optional (`None` = off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Keepalive pings towards the client (default: 20 s interval, 20 s deadline).
    pub keepalive: Option<Keepalive>,
    /// Keepalive pings towards the upstream (default: 20 s interval, 20 s deadline, as the
    /// Python original's `websockets` client): a console whose host vanished without a FIN or
    /// RST is noticed within interval + timeout, not after TCP's retransmission timeout.
    pub upstream_keepalive: Option<Keepalive>,
    /// End the session when no data frame moved in either direction for this long.
    pub idle_timeout: Option<Duration>,
    /// End the session after this long regardless of activity.
    pub max_lifetime: Option<Duration>,
    /// End the session at this absolute instant with this close frame sent to the client
    /// (for example when the token expires: a 4xxx code and a reason).
    pub deadline: Option<(Instant, CloseFrame)>,
    /// How long the closing handshake may take once the session ends (sending the close frames
    /// and waiting for the replies) before the connections are dropped.
    pub close_timeout: Duration,
}

impl Default for RelayConfig {
    /// Keepalive on both legs (20 s / 20 s), idle timeout, lifetime and deadline off, 5 s close
    /// timeout.
    fn default() -> Self {
        RelayConfig {
            keepalive: Some(Keepalive::default()),
            upstream_keepalive: Some(Keepalive::default()),
            idle_timeout: None,
            max_lifetime: None,
            deadline: None,
            close_timeout: Duration::from_secs(5),
        }
    }
}

/// Counters of one direction of a session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectionStats {
    /// Data frames (binary + text) delivered.
    pub frames: u64,
    /// Payload bytes of those frames.
    pub bytes: u64,
}

/// Who or what ended a session.
#[derive(Debug)]
#[non_exhaustive]
pub enum EndReason {
    /// The client sent a close frame (with this code and reason, if it had one).
    ClientClosed(Option<CloseFrame>),
    /// The upstream sent a close frame (with this code and reason, if it had one).
    UpstreamClosed(Option<CloseFrame>),
    /// No data frame moved in either direction for [`RelayConfig::idle_timeout`].
    IdleTimeout,
    /// The session reached [`RelayConfig::max_lifetime`].
    MaxLifetime,
    /// The session reached [`RelayConfig::deadline`].
    Deadline,
    /// The shutdown future resolved.
    Shutdown,
    /// A [`StopRequest::Close`] ended the session (an operator, a revocation); the label is the
    /// request's.
    Requested(&'static str),
    /// The client did not answer a keepalive ping in time.
    KeepaliveTimeout,
    /// The upstream did not answer a keepalive ping in time.
    UpstreamKeepaliveTimeout,
    /// A side's connection ended (EOF, reset) without a close frame.
    Vanished(Side),
    /// Reading from or writing to a side failed.
    Failed {
        /// The side whose connection failed.
        side: Side,
        /// What went wrong.
        error: TransportError,
    },
}

impl EndReason {
    /// A stable, low-cardinality name of the reason, for metrics labels.
    pub fn label(&self) -> &'static str {
        match self {
            EndReason::ClientClosed(_) => "client_closed",
            EndReason::UpstreamClosed(_) => "upstream_closed",
            EndReason::IdleTimeout => "idle_timeout",
            EndReason::MaxLifetime => "max_lifetime",
            EndReason::Deadline => "deadline",
            EndReason::Shutdown => "shutdown",
            EndReason::Requested(label) => label,
            EndReason::KeepaliveTimeout => "keepalive_timeout",
            EndReason::UpstreamKeepaliveTimeout => "upstream_keepalive_timeout",
            EndReason::Vanished(Side::Client) => "client_vanished",
            EndReason::Vanished(Side::Upstream) => "upstream_vanished",
            EndReason::Failed {
                side: Side::Client, ..
            } => "client_error",
            EndReason::Failed {
                side: Side::Upstream,
                ..
            } => "upstream_error",
        }
    }
}

/// What happened in a relayed session, for logs and metrics.
#[derive(Debug)]
pub struct RelayOutcome {
    /// Client to upstream counters.
    pub client_to_upstream: DirectionStats,
    /// Upstream to client counters.
    pub upstream_to_client: DirectionStats,
    /// Wall time from the start of the relay to its end.
    pub duration: Duration,
    /// Who or what ended the session.
    pub ended_by: EndReason,
    /// The close frame sent to the client, if any (code 1005, [`close_code::NO_STATUS`], when a
    /// close without a status code was passed on).
    pub close_sent_to_client: Option<CloseFrame>,
    /// The close frame sent to the upstream, if any (code 1005 as for the client).
    pub close_sent_to_upstream: Option<CloseFrame>,
}

/// Relays frames between `client` and `upstream` until the session ends, then returns what happened.
///
/// Both directions run concurrently inside this one future, each preserving order and delivering
/// every data frame exactly once. Pings and pongs are not forwarded (each hop answers its own),
/// and the relay pings the client itself when [`RelayConfig::keepalive`] is set. `shutdown`
/// resolving closes both sides with 1001 "going away". See the crate docs for close semantics
/// and the per-session memory bound.
pub async fn relay<C, U, S>(
    client: C,
    upstream: U,
    config: &RelayConfig,
    shutdown: S,
) -> RelayOutcome
where
    C: FrameTransport,
    U: FrameTransport,
    S: Future<Output = ()> + Send,
{
    let stop = async {
        shutdown.await;
        StopRequest::Shutdown
    };
    relay_controlled(client, upstream, config, stop, None).await
}

/// Why a session is asked to end from outside, and with which close frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopRequest {
    /// The server shuts down: both sides get 1001 "going away" ([`EndReason::Shutdown`]).
    Shutdown,
    /// Someone ended this session (an operator, a revocation): each side gets its frame, and
    /// the outcome says [`EndReason::Requested`] with `label`.
    Close {
        /// The close frame sent to the client.
        to_client: CloseFrame,
        /// The close frame sent to the upstream.
        to_upstream: CloseFrame,
        /// A stable, low-cardinality name of the cause, for logs and metrics labels.
        label: &'static str,
    },
}

/// Counters a running relay keeps current for readers elsewhere (an admin API listing live
/// sessions). They are updated once per poll of the relay, not per frame.
#[derive(Debug, Default)]
pub struct LiveStats {
    client_to_upstream: LiveDirection,
    upstream_to_client: LiveDirection,
}

#[derive(Debug, Default)]
struct LiveDirection {
    frames: AtomicU64,
    bytes: AtomicU64,
    /// What [`LiveStats::take_unreported`] handed out so far.
    reported_frames: AtomicU64,
    reported_bytes: AtomicU64,
}

impl LiveDirection {
    fn publish(&self, stats: DirectionStats) {
        self.frames.store(stats.frames, Ordering::Relaxed);
        self.bytes.store(stats.bytes, Ordering::Relaxed);
    }

    fn read(&self) -> DirectionStats {
        DirectionStats {
            frames: self.frames.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// What grew since the last call; `fetch_max` keeps two racing readers from counting
    /// the same growth twice.
    fn take_unreported(&self) -> DirectionStats {
        let now = self.read();
        DirectionStats {
            frames: now.frames.saturating_sub(
                self.reported_frames
                    .fetch_max(now.frames, Ordering::Relaxed),
            ),
            bytes: now
                .bytes
                .saturating_sub(self.reported_bytes.fetch_max(now.bytes, Ordering::Relaxed)),
        }
    }
}

impl LiveStats {
    /// Client to upstream counters so far.
    pub fn client_to_upstream(&self) -> DirectionStats {
        self.client_to_upstream.read()
    }

    /// Upstream to client counters so far.
    pub fn upstream_to_client(&self) -> DirectionStats {
        self.upstream_to_client.read()
    }

    /// How much each direction (client to upstream, upstream to client) grew since the last
    /// call: what a metrics exporter adds to its totals while the session runs, so rates are
    /// live rather than booked when the session ends.
    pub fn take_unreported(&self) -> (DirectionStats, DirectionStats) {
        (
            self.client_to_upstream.take_unreported(),
            self.upstream_to_client.take_unreported(),
        )
    }

    /// Sets the counters to a finished session's totals.
    pub fn publish(&self, client_to_upstream: DirectionStats, upstream_to_client: DirectionStats) {
        self.client_to_upstream.publish(client_to_upstream);
        self.upstream_to_client.publish(upstream_to_client);
    }
}

/// [`relay`] with a stop future that says how the session ends ([`StopRequest`]) and, when
/// `live` is given, counters kept current while the session runs.
pub async fn relay_controlled<C, U, S>(
    client: C,
    upstream: U,
    config: &RelayConfig,
    stop: S,
    live: Option<Arc<LiveStats>>,
) -> RelayOutcome
where
    C: FrameTransport,
    U: FrameTransport,
    S: Future<Output = StopRequest> + Send,
{
    let started = Instant::now();
    let mut session = Session {
        client,
        upstream,
        client_to_upstream: Pump::default(),
        upstream_to_client: Pump::default(),
        timers: Timers::new(config, started),
        live,
    };
    let mut requested = pin!(stop);
    let stop = poll_fn(|cx| session.poll_active(cx, requested.as_mut())).await;

    let Session {
        mut client,
        mut upstream,
        client_to_upstream,
        upstream_to_client,
        live,
        ..
    } = session;
    if let Some(live) = &live {
        live.client_to_upstream.publish(client_to_upstream.stats);
        live.upstream_to_client.publish(upstream_to_client.stats);
    }
    let (ended_by, plan) = closing_plan(stop, config);
    // Boxed: the close handshake's futures (and its timer) would otherwise be part of every
    // session's state for as long as it relays, though they run only once, at the end.
    let sent = Box::pin(close_both(
        &mut client,
        &mut upstream,
        plan,
        config.close_timeout,
    ))
    .await;

    RelayOutcome {
        client_to_upstream: client_to_upstream.stats,
        upstream_to_client: upstream_to_client.stats,
        duration: started.elapsed(),
        ended_by,
        close_sent_to_client: sent.client,
        close_sent_to_upstream: sent.upstream,
    }
}

/// Runs the close handshake with both peers at once; the peers get `close_timeout` to complete
/// it, after that they are dropped.
async fn close_both<C: FrameTransport, U: FrameTransport>(
    client: &mut C,
    upstream: &mut U,
    plan: ClosingPlan,
    close_timeout: Duration,
) -> ClosesSent {
    let mut sent = ClosesSent::default();
    let handshake = async {
        tokio::join!(
            run_close(client, plan.client, &mut sent.client, EndAfterReply::Yes),
            run_close(
                upstream,
                plan.upstream,
                &mut sent.upstream,
                EndAfterReply::No
            ),
        )
    };
    let _ = tokio::time::timeout(close_timeout, handshake).await;
    sent
}

// === active phase ===

/// Frames a pump moves in one poll before the relay yields to the runtime, so that a side that
/// is always ready cannot starve the other direction or other tasks.
const FRAMES_PER_POLL: usize = 64;

/// Payload of the keepalive pings sent to the client.
const KEEPALIVE_PAYLOAD: &[u8] = b"ws-proxy keepalive";

struct Session<C, U> {
    client: C,
    upstream: U,
    client_to_upstream: Pump,
    upstream_to_client: Pump,
    timers: Timers,
    live: Option<Arc<LiveStats>>,
}

/// Why the active phase stopped.
enum Stop {
    Closed(Side, Option<CloseFrame>),
    Vanished(Side),
    Failed(Side, TransportError),
    IdleTimeout,
    MaxLifetime,
    Deadline,
    Requested(StopRequest),
    KeepaliveTimeout,
    UpstreamKeepaliveTimeout,
}

impl<C: FrameTransport, U: FrameTransport> Session<C, U> {
    fn poll_active<S: Future<Output = StopRequest>>(
        &mut self,
        cx: &mut Context<'_>,
        requested: Pin<&mut S>,
    ) -> Poll<Stop> {
        if let Poll::Ready(request) = requested.poll(cx) {
            return Poll::Ready(Stop::Requested(request));
        }
        let stop = self.poll_pumps(cx);
        if let Some(live) = &self.live {
            live.client_to_upstream
                .publish(self.client_to_upstream.stats);
            live.upstream_to_client
                .publish(self.upstream_to_client.stats);
        }
        stop
    }

    fn poll_pumps(&mut self, cx: &mut Context<'_>) -> Poll<Stop> {
        // A ping for the upstream goes first: the forward pump then flushes the upstream's sink.
        match send_due_ping(
            cx,
            &mut self.upstream,
            self.timers.upstream_keepalive.as_mut(),
        ) {
            Ok(sent) => self.client_to_upstream.unflushed |= sent,
            Err(error) => return Poll::Ready(stop_for_sink_error(Side::Upstream, error)),
        }
        let forward =
            self.client_to_upstream
                .drive(cx, &mut self.client, &mut self.upstream, Side::Client);
        if let PumpState::Stopped(stop) = forward {
            return Poll::Ready(stop);
        }
        if std::mem::take(&mut self.client_to_upstream.heard_from_source)
            && let Some(keepalive) = &mut self.timers.client_keepalive
        {
            keepalive.peer_heard();
        }
        // The client's ping goes before the backward pump, which flushes the client's sink.
        match send_due_ping(cx, &mut self.client, self.timers.client_keepalive.as_mut()) {
            Ok(sent) => self.upstream_to_client.unflushed |= sent,
            Err(error) => return Poll::Ready(stop_for_sink_error(Side::Client, error)),
        }

        let backward =
            self.upstream_to_client
                .drive(cx, &mut self.upstream, &mut self.client, Side::Upstream);
        if let PumpState::Stopped(stop) = backward {
            return Poll::Ready(stop);
        }
        if std::mem::take(&mut self.upstream_to_client.heard_from_source)
            && let Some(keepalive) = &mut self.timers.upstream_keepalive
        {
            keepalive.peer_heard();
        }

        let moved = std::mem::take(&mut self.client_to_upstream.moved)
            | std::mem::take(&mut self.upstream_to_client.moved);
        if moved {
            self.timers.data_moved();
        }
        if let Poll::Ready(stop) = self.timers.poll(cx) {
            return Poll::Ready(stop);
        }

        let yielded =
            matches!(forward, PumpState::Yielded) || matches!(backward, PumpState::Yielded);
        if yielded || self.timers.ping_due() {
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    }
}

/// One direction of the relay: at most one frame read but not yet accepted by the sink.
#[derive(Default)]
struct Pump {
    pending: Option<Frame>,
    unflushed: bool,
    moved: bool,
    /// A frame of any kind came from the source: it is alive, whether or not it was a pong.
    heard_from_source: bool,
    stats: DirectionStats,
}

enum PumpState {
    /// Waiting for the source or the sink; wakers are registered.
    Waiting,
    /// Moved its budget of frames and can go on at once.
    Yielded,
    Stopped(Stop),
}

impl Pump {
    /// Moves frames from `source` to `sink` until one of them is not ready: frames are fed while
    /// the source has more, and the sink is flushed once the source has none.
    fn drive<Src, Dst>(
        &mut self,
        cx: &mut Context<'_>,
        source: &mut Src,
        sink: &mut Dst,
        source_side: Side,
    ) -> PumpState
    where
        Src: Stream<Item = Result<Frame, TransportError>> + Unpin,
        Dst: Sink<Frame, Error = TransportError> + Unpin,
    {
        let sink_side = other(source_side);
        for _ in 0..FRAMES_PER_POLL {
            if let Some(frame) = self.pending.take() {
                match Pin::new(&mut *sink).poll_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(error)) => {
                        return PumpState::Stopped(stop_for_sink_error(sink_side, error));
                    }
                    Poll::Pending => {
                        self.pending = Some(frame);
                        return PumpState::Waiting;
                    }
                }
                let len = frame.payload_len() as u64;
                if let Err(error) = Pin::new(&mut *sink).start_send(frame) {
                    return PumpState::Stopped(stop_for_sink_error(sink_side, error));
                }
                self.stats.frames += 1;
                self.stats.bytes += len;
                self.unflushed = true;
                self.moved = true;
            }

            match Pin::new(&mut *source).poll_next(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    self.heard_from_source = true;
                    match frame {
                        Frame::Binary(_) | Frame::Text(_) | Frame::MaskedBinary(_) => {
                            self.pending = Some(frame)
                        }
                        // Answered by the transport of this hop; never forwarded.
                        Frame::Ping(_) | Frame::Pong(_) => {}
                        Frame::Close(close) => {
                            return PumpState::Stopped(Stop::Closed(source_side, close));
                        }
                    }
                }
                Poll::Ready(Some(Err(TransportError::ConnectionLost))) | Poll::Ready(None) => {
                    return PumpState::Stopped(Stop::Vanished(source_side));
                }
                Poll::Ready(Some(Err(error))) => {
                    return PumpState::Stopped(Stop::Failed(source_side, error));
                }
                Poll::Pending => {
                    if self.unflushed {
                        match Pin::new(&mut *sink).poll_flush(cx) {
                            Poll::Ready(Ok(())) => self.unflushed = false,
                            Poll::Ready(Err(error)) => {
                                return PumpState::Stopped(stop_for_sink_error(sink_side, error));
                            }
                            Poll::Pending => {}
                        }
                    }
                    return PumpState::Waiting;
                }
            }
        }
        PumpState::Yielded
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::Client => Side::Upstream,
        Side::Upstream => Side::Client,
    }
}

fn stop_for_sink_error(side: Side, error: TransportError) -> Stop {
    match error {
        TransportError::ConnectionLost => Stop::Vanished(side),
        error => Stop::Failed(side, error),
    }
}

/// The session timers. Each is a boxed [`Sleep`] that exists only when its setting is on.
struct Timers {
    idle: Option<(Duration, Pin<Box<Sleep>>)>,
    last_activity: Instant,
    lifetime: Option<Pin<Box<Sleep>>>,
    deadline: Option<Pin<Box<Sleep>>>,
    client_keepalive: Option<KeepaliveTimer>,
    upstream_keepalive: Option<KeepaliveTimer>,
}

/// One leg's keepalive: when the next ping is due, and whether its pong is awaited.
struct KeepaliveTimer {
    keepalive: Keepalive,
    timer: Pin<Box<Sleep>>,
    awaiting_pong: bool,
    ping_due: bool,
}

impl KeepaliveTimer {
    fn new(keepalive: Keepalive) -> Self {
        Self {
            keepalive,
            timer: Box::pin(sleep(keepalive.interval)),
            awaiting_pong: false,
            ping_due: false,
        }
    }

    /// Any frame from the peer answers the ping: the relay reads a peer only as fast as the
    /// other leg takes its data, so behind a slow link the pong itself can wait in the kernel's
    /// buffers behind seconds of data that prove the peer is there.
    fn peer_heard(&mut self) {
        if self.awaiting_pong {
            self.awaiting_pong = false;
            self.ping_due = false;
            self.timer
                .as_mut()
                .reset(Instant::now() + self.keepalive.interval);
        }
    }

    /// Ready with `true` when the pong did not come in time.
    fn poll(&mut self, cx: &mut Context<'_>) -> bool {
        if self.timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        if self.awaiting_pong {
            return true;
        }
        self.awaiting_pong = true;
        self.ping_due = true;
        self.timer
            .as_mut()
            .reset(Instant::now() + self.keepalive.timeout);
        // Register the waker for the pong deadline.
        let _ = self.timer.as_mut().poll(cx);
        false
    }
}

/// Hands a leg's keepalive ping to its sink when one is due and the sink has room; whether it
/// did (the sink then needs a flush).
fn send_due_ping<T: FrameTransport>(
    cx: &mut Context<'_>,
    sink: &mut T,
    keepalive: Option<&mut KeepaliveTimer>,
) -> Result<bool, TransportError> {
    let Some(keepalive) = keepalive.filter(|keepalive| keepalive.ping_due) else {
        return Ok(false);
    };
    match Pin::new(&mut *sink).poll_ready(cx) {
        Poll::Ready(Ok(())) => {
            Pin::new(&mut *sink).start_send(Frame::Ping(Bytes::from_static(KEEPALIVE_PAYLOAD)))?;
            keepalive.ping_due = false;
            Ok(true)
        }
        Poll::Ready(Err(error)) => Err(error),
        Poll::Pending => Ok(false),
    }
}

impl Timers {
    fn new(config: &RelayConfig, started: Instant) -> Self {
        Timers {
            idle: config
                .idle_timeout
                .map(|idle| (idle, Box::pin(sleep_until(started + idle)))),
            last_activity: started,
            lifetime: config
                .max_lifetime
                .map(|lifetime| Box::pin(sleep_until(started + lifetime))),
            deadline: config
                .deadline
                .as_ref()
                .map(|(at, _)| Box::pin(sleep_until(*at))),
            client_keepalive: config.keepalive.map(KeepaliveTimer::new),
            upstream_keepalive: config.upstream_keepalive.map(KeepaliveTimer::new),
        }
    }

    fn ping_due(&self) -> bool {
        [&self.client_keepalive, &self.upstream_keepalive]
            .into_iter()
            .flatten()
            .any(|keepalive| keepalive.ping_due)
    }

    /// Called once per poll in which data moved (not per frame: `Instant::now` is not free).
    fn data_moved(&mut self) {
        if self.idle.is_some() {
            self.last_activity = Instant::now();
        }
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Stop> {
        if let Some(deadline) = &mut self.deadline
            && deadline.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Stop::Deadline);
        }
        if let Some(lifetime) = &mut self.lifetime
            && lifetime.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Stop::MaxLifetime);
        }
        if let Some((idle, timer)) = &mut self.idle {
            // The timer is not moved on every frame; when it fires, it is pushed to the real
            // end of the idle period if data moved in the meantime.
            while timer.as_mut().poll(cx).is_ready() {
                let idle_until = self.last_activity + *idle;
                if idle_until <= Instant::now() {
                    return Poll::Ready(Stop::IdleTimeout);
                }
                timer.as_mut().reset(idle_until);
            }
        }
        if let Some(keepalive) = &mut self.client_keepalive
            && keepalive.poll(cx)
        {
            return Poll::Ready(Stop::KeepaliveTimeout);
        }
        if let Some(keepalive) = &mut self.upstream_keepalive
            && keepalive.poll(cx)
        {
            return Poll::Ready(Stop::UpstreamKeepaliveTimeout);
        }
        Poll::Pending
    }
}

// === closing phase ===

/// What the relay does towards one side once the session ends.
enum CloseAction {
    /// The side sent a close: send the reply and do not wait for anything more.
    Reply(Option<CloseFrame>),
    /// Send a close and wait for the side's reply.
    Initiate(Option<CloseFrame>),
    /// The side failed: try to tell it why, do not wait.
    Notify(CloseFrame),
    /// The side is gone.
    Nothing,
}

struct ClosingPlan {
    client: CloseAction,
    upstream: CloseAction,
}

#[derive(Default)]
struct ClosesSent {
    client: Option<CloseFrame>,
    upstream: Option<CloseFrame>,
}

fn closing_plan(stop: Stop, config: &RelayConfig) -> (EndReason, ClosingPlan) {
    let both = |code: u16, reason: &str| ClosingPlan {
        client: CloseAction::Initiate(Some(CloseFrame::new(code, reason))),
        upstream: CloseAction::Initiate(Some(CloseFrame::new(code, reason))),
    };
    let for_sides = |side: Side, own: CloseAction, other: CloseAction| match side {
        Side::Client => ClosingPlan {
            client: own,
            upstream: other,
        },
        Side::Upstream => ClosingPlan {
            client: other,
            upstream: own,
        },
    };
    match stop {
        Stop::Closed(side, close) => {
            let plan = for_sides(
                side,
                CloseAction::Reply(close.clone()),
                CloseAction::Initiate(close.clone()),
            );
            let reason = match side {
                Side::Client => EndReason::ClientClosed(close),
                Side::Upstream => EndReason::UpstreamClosed(close),
            };
            (reason, plan)
        }
        Stop::Vanished(side) => {
            let reason = match side {
                Side::Client => close_reason::CLIENT_GONE,
                Side::Upstream => close_reason::UPSTREAM_GONE,
            };
            let other =
                CloseAction::Initiate(Some(CloseFrame::new(close_code::GOING_AWAY, reason)));
            (
                EndReason::Vanished(side),
                for_sides(side, CloseAction::Nothing, other),
            )
        }
        Stop::Failed(side, TransportError::Violation(frame)) => {
            let plan = for_sides(
                side,
                CloseAction::Notify(frame.clone()),
                CloseAction::Initiate(Some(frame.clone())),
            );
            (
                EndReason::Failed {
                    side,
                    error: TransportError::Violation(frame),
                },
                plan,
            )
        }
        Stop::Failed(side, error) => {
            let own = match &error {
                TransportError::Protocol(_) => CloseAction::Notify(CloseFrame::new(
                    close_code::PROTOCOL_ERROR,
                    close_reason::PROTOCOL_ERROR,
                )),
                TransportError::InvalidPayload(_) => CloseAction::Notify(CloseFrame::new(
                    close_code::INVALID_PAYLOAD,
                    close_reason::INVALID_PAYLOAD,
                )),
                TransportError::MessageTooLarge { .. } => CloseAction::Notify(CloseFrame::new(
                    close_code::MESSAGE_TOO_BIG,
                    close_reason::MESSAGE_TOO_BIG,
                )),
                _ => CloseAction::Nothing,
            };
            let reason = match side {
                Side::Client => close_reason::CLIENT_ERROR,
                Side::Upstream => close_reason::UPSTREAM_ERROR,
            };
            let other =
                CloseAction::Initiate(Some(CloseFrame::new(close_code::INTERNAL_ERROR, reason)));
            (
                EndReason::Failed { side, error },
                for_sides(side, own, other),
            )
        }
        Stop::IdleTimeout => (
            EndReason::IdleTimeout,
            both(close_code::GOING_AWAY, close_reason::IDLE_TIMEOUT),
        ),
        Stop::MaxLifetime => (
            EndReason::MaxLifetime,
            both(close_code::GOING_AWAY, close_reason::MAX_LIFETIME),
        ),
        Stop::Requested(StopRequest::Shutdown) => (
            EndReason::Shutdown,
            both(close_code::GOING_AWAY, close_reason::SHUTDOWN),
        ),
        Stop::Requested(StopRequest::Close {
            to_client,
            to_upstream,
            label,
        }) => (
            EndReason::Requested(label),
            ClosingPlan {
                client: CloseAction::Initiate(Some(to_client)),
                upstream: CloseAction::Initiate(Some(to_upstream)),
            },
        ),
        Stop::KeepaliveTimeout => (
            EndReason::KeepaliveTimeout,
            ClosingPlan {
                client: CloseAction::Initiate(Some(CloseFrame::new(
                    close_code::INTERNAL_ERROR,
                    close_reason::KEEPALIVE_TIMEOUT,
                ))),
                upstream: CloseAction::Initiate(Some(CloseFrame::new(
                    close_code::GOING_AWAY,
                    close_reason::KEEPALIVE_TIMEOUT,
                ))),
            },
        ),
        Stop::UpstreamKeepaliveTimeout => (
            EndReason::UpstreamKeepaliveTimeout,
            ClosingPlan {
                client: CloseAction::Initiate(Some(CloseFrame::new(
                    close_code::INTERNAL_ERROR,
                    close_reason::UPSTREAM_KEEPALIVE_TIMEOUT,
                ))),
                upstream: CloseAction::Notify(CloseFrame::new(
                    close_code::GOING_AWAY,
                    close_reason::UPSTREAM_KEEPALIVE_TIMEOUT,
                )),
            },
        ),
        Stop::Deadline => {
            let to_client = config.deadline.as_ref().map(|(_, close)| close.clone());
            let reason = to_client.as_ref().map_or("", |close| close.reason.as_str());
            let to_upstream = CloseFrame::new(close_code::GOING_AWAY, reason);
            (
                EndReason::Deadline,
                ClosingPlan {
                    client: CloseAction::Initiate(to_client),
                    upstream: CloseAction::Initiate(Some(to_upstream)),
                },
            )
        }
    }
}

/// Whether a side whose last frame from the relay needs no answer (the reply to its close, or the
/// notice of its protocol error) has its stream ended (`Sink::poll_close`) right after that frame.
///
/// RFC 6455 section 7.1.1: the server closes the TCP connection as soon as it has sent and
/// received a close; the client should wait for it. The relay is the server of the client leg and
/// the client of the upstream leg.
#[derive(Clone, Copy, PartialEq, Eq)]
enum EndAfterReply {
    Yes,
    No,
}

/// Carries out `action` on one side, recording the close frame once it is handed to the sink.
async fn run_close<T: FrameTransport>(
    transport: &mut T,
    action: CloseAction,
    sent: &mut Option<CloseFrame>,
    end_after_reply: EndAfterReply,
) {
    let (close, await_reply) = match action {
        CloseAction::Reply(close) => (close, false),
        CloseAction::Initiate(close) => (close, true),
        CloseAction::Notify(close) => (Some(close), false),
        CloseAction::Nothing => return,
    };
    let recorded = close
        .clone()
        .unwrap_or_else(|| CloseFrame::new(close_code::NO_STATUS, ""));
    if transport.feed(Frame::Close(close)).await.is_err() {
        return;
    }
    *sent = Some(recorded);
    if !await_reply {
        let _ = match end_after_reply {
            EndAfterReply::Yes => transport.close().await,
            EndAfterReply::No => transport.flush().await,
        };
        return;
    }
    if transport.flush().await.is_err() {
        return;
    }
    // Frames still in flight from this side are dropped: the other side has closed.
    while let Some(Ok(frame)) = transport.next().await {
        if matches!(frame, Frame::Close(_)) {
            return;
        }
    }
}
