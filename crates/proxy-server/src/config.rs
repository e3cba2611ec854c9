//! Settings of the HTTP front and the sessions it runs (everything except token keys and the
//! upstream, which belong to the verifier and the connector).
use std::sync::Arc;
use std::time::Duration;

use proxy_core::RelayConfig;

use proxy_console::RecordingConfig;
use proxy_control::replica_name;
use proxy_control::store::{MemoryStateStore, SessionLimits, StateStore, StorePolicy};
use proxy_keys::{AdminToken, ServerTls};
use proxy_share::ShareConfig;

use crate::path::PathPrefix;
use crate::reject::RejectStyle;
use crate::token_source::TokenSources;

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
    /// Whether permessage-deflate (RFC 7692) is accepted when a browser offers it (default
    /// true, as the Python original's `websockets` server did). The proxy compresses each
    /// message on its own (no context kept between messages), so a compressed session holds no
    /// more memory; what it saves and costs on recorded console traffic is in
    /// `docs/performance.md`.
    pub permessage_deflate: bool,
    /// Serve `wss://` on the console port with this certificate (default: none, plain `ws://`,
    /// for TLS terminated at an ingress). The admin listener stays plain.
    pub tls: Option<Arc<ServerTls>>,
    /// Where tokens may come from (default: path, subprotocol, header).
    pub token_sources: TokenSources,
    /// Browser origins allowed to open consoles (default: none checked). A request with an
    /// `Origin` header not on the list is refused with 403 before its token is looked at; a
    /// request without one (not a browser) is allowed.
    pub allowed_origins: Option<OriginAllowList>,
    /// Tokens are single-use: a token must carry a `jti`, and its first session is its only
    /// one, remembered in [`state`](Self::state) (default: false, tokens may be reused until
    /// they expire, as the original).
    pub single_use_tokens: bool,
    /// Where sessions, limits, revocations and used token ids are kept (default: this process,
    /// [`MemoryStateStore`]; a [`RedisStateStore`](proxy_control::store::RedisStateStore) shares them
    /// between replicas).
    pub state: Arc<dyn StateStore>,
    /// The store's lease and what each check does when the store is down.
    pub store_policy: StorePolicy,
    /// Most concurrent sessions per user, per lab instance and per VM (default: none).
    pub session_limits: SessionLimits,
    /// The admin API's bearer token; without one the API is off (default). It is served on
    /// the admin listener only.
    pub admin_token: Option<Arc<AdminToken>>,
    /// This replica's name in session ids and the admin API (default: `HOSTNAME`, the pod
    /// name, else `ws-proxy`).
    pub replica: String,
    /// Shared consoles: every session of one VM on this replica joins one hub with one
    /// upstream (default: none, each session has its own upstream, as the Python original).
    pub share_consoles: Option<ShareConfig>,
    /// Session recordings (default: none are recorded).
    pub recording: Option<Arc<RecordingConfig>>,
}

/// Allowed browser origins: exact ones (`https://lab.example.com`) and wildcards of one or more
/// leading labels (`https://*.example.com` allows `https://a.example.com` and
/// `https://a.b.example.com`, not `https://example.com`). Compared without case.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OriginAllowList {
    entries: Vec<String>,
}

impl OriginAllowList {
    /// The list from its entries (trailing slashes ignored).
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(entries: I) -> Self {
        Self {
            entries: entries
                .into_iter()
                .map(|entry| {
                    entry
                        .as_ref()
                        .trim()
                        .trim_end_matches('/')
                        .to_ascii_lowercase()
                })
                .filter(|entry| !entry.is_empty())
                .collect(),
        }
    }

    /// Whether `origin` (an `Origin` header value) is allowed.
    pub fn allows(&self, origin: &str) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        self.entries
            .iter()
            .any(|entry| match entry.split_once("://*.") {
                Some((scheme, domain)) => origin
                    .strip_prefix(scheme)
                    .and_then(|rest| rest.strip_prefix("://"))
                    .and_then(|host| host.strip_suffix(domain))
                    .is_some_and(|labels| labels.len() > 1 && labels.ends_with('.')),
                None => *entry == origin,
            })
    }
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
            permessage_deflate: true,
            tls: None,
            token_sources: TokenSources::default(),
            allowed_origins: None,
            single_use_tokens: false,
            state: Arc::new(MemoryStateStore::default()),
            store_policy: StorePolicy::default(),
            session_limits: SessionLimits::default(),
            admin_token: None,
            replica: replica_name(),
            share_consoles: None,
            recording: None,
        }
    }
}

#[cfg(test)]
mod origin_tests {
    use super::OriginAllowList;

    #[test]
    fn exact_and_wildcard_origins() {
        let list =
            OriginAllowList::new(["https://lab.example.com/", "HTTPS://*.Labs.Example.org", ""]);
        for allowed in [
            "https://lab.example.com",
            "https://LAB.example.com",
            "https://a.labs.example.org",
            "https://a.b.labs.example.org",
        ] {
            assert!(list.allows(allowed), "{allowed}");
        }
        for refused in [
            "http://lab.example.com",
            "https://lab.example.com.evil.net",
            "https://labs.example.org",
            "https://evillabs.example.org",
            "http://a.labs.example.org",
            "null",
            "",
        ] {
            assert!(!list.allows(refused), "{refused}");
        }
    }
}
