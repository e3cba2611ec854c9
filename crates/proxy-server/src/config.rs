//! Settings of the HTTP front and the sessions it runs (everything except token keys and the
//! upstream, which belong to the verifier and the connector).
use std::sync::Arc;
use std::time::Duration;

use proxy_core::RelayConfig;

use crate::path::PathPrefix;
use crate::reject::RejectStyle;
use crate::tls::ServerTls;

/// Resource limits of the front. The defaults suit one replica serving thousands of consoles.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Time a client has to send its complete request head (default 10 s), so slow or idle
    /// connections cannot hold a slot.
    pub handshake_timeout: Duration,
    /// Largest request head accepted, request line and headers (default 16 KiB; answered 431
    /// beyond). A console URL carries a JWT of a few hundred bytes.
    pub max_header_bytes: usize,
    /// Most console sessions at once, counting those still dialling upstream (default 10 000;
    /// answered 503 beyond).
    pub max_sessions: usize,
    /// Largest WebSocket message accepted from the client (default 32 MiB, closed with 1009
    /// beyond). The upstream's limit is the connector's setting.
    pub max_message_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            handshake_timeout: Duration::from_secs(10),
            max_header_bytes: 16 * 1024,
            max_sessions: 10_000,
            max_message_bytes: 32 * 1024 * 1024,
        }
    }
}

/// Settings of the front and its sessions.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// The Python original's `host_path_prefix` (default: none).
    pub path_prefix: PathPrefix,
    /// How refused requests are answered (default [`RejectStyle::Auto`]).
    pub reject_style: RejectStyle,
    /// Resource limits.
    pub limits: Limits,
    /// Timers of each relayed session (keepalive, idle, lifetime, close timeout).
    pub relay: RelayConfig,
    /// How long live sessions may continue after a shutdown request before they are closed
    /// with 1001 (default 25 s, inside Kubernetes' default 30 s termination grace period).
    pub drain_timeout: Duration,
    /// Whether `/healthz`, `/readyz` and `/metrics` are answered on the main port (default
    /// true; turned off when a separate admin listener serves them).
    pub admin_on_main_port: bool,
    /// Whether a live session is closed when its token expires (default false, as the Python
    /// original, which checks the token only when the session opens). When on, the client is
    /// closed with 4001 `token expired` at the token's `exp` and the upstream with 1001 (a
    /// [`RelayConfig::deadline`] in [`relay`](Self::relay) still applies when it comes first).
    pub close_on_token_expiry: bool,
    /// Serve `wss://` on the console port with this certificate (default: none, plain `ws://`,
    /// for TLS terminated at an ingress). The admin listener stays plain.
    pub tls: Option<Arc<ServerTls>>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            path_prefix: PathPrefix::none(),
            reject_style: RejectStyle::default(),
            limits: Limits::default(),
            relay: RelayConfig::default(),
            drain_timeout: Duration::from_secs(25),
            admin_on_main_port: true,
            close_on_token_expiry: false,
            tls: None,
        }
    }
}
