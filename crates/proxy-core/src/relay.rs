//! The relay loop. Bodies are filled in by the `proxy-core` issue; the public names are the contract
//! `proxy-server` codes against.
use std::future::Future;
use std::time::Duration;

use crate::{CloseFrame, FrameTransport};

/// Which side of a relayed session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// The browser / WebSocket client that connected to the proxy.
    Client,
    /// The KubeVirt VNC subresource the proxy dialled.
    Upstream,
}

/// Keepalive pings sent towards the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// How long the client connection may be quiet before a ping is sent.
    pub interval: Duration,
    /// How long to wait for the pong before the client is considered gone.
    pub timeout: Duration,
}

/// Settings of one relayed session. Every timer is optional (`None` = off).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayConfig {
    /// Keepalive pings towards the client (default: 20 s interval, 20 s deadline).
    pub keepalive: Option<Keepalive>,
    /// End the session when no data frame moved in either direction for this long.
    pub idle_timeout: Option<Duration>,
    /// End the session after this long regardless of activity.
    pub max_lifetime: Option<Duration>,
    /// End the session at this absolute instant with this close frame sent to the client
    /// (for example when the token expires: a 4xxx code and a reason).
    pub deadline: Option<(tokio::time::Instant, CloseFrame)>,
    /// How long to wait for the peer's close reply once a close was sent, before dropping it.
    pub close_timeout: Duration,
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
    /// Placeholder until the relay issue defines the full set.
    Unknown,
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
    /// The close frame sent to the client, if any.
    pub close_sent_to_client: Option<CloseFrame>,
    /// The close frame sent to the upstream, if any.
    pub close_sent_to_upstream: Option<CloseFrame>,
}

/// Relays frames between `client` and `upstream` until the session ends, then returns what happened.
/// `shutdown` resolving closes both sides with 1001 "going away".
pub async fn relay<C, U, S>(client: C, upstream: U, config: &RelayConfig, shutdown: S) -> RelayOutcome
where
    C: FrameTransport,
    U: FrameTransport,
    S: Future<Output = ()> + Send,
{
    let _ = (client, upstream, config, shutdown);
    unimplemented!("filled in by the proxy-core issue")
}
