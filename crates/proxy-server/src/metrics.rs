//! Prometheus metrics of the proxy, kept in a `prometheus-client` registry.
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;

use proxy_core::{LiveStats, RelayOutcome};
use proxy_share::HubTotals;

use proxy_console::ConsoleMetrics;
use proxy_control::StoreMetrics;
use proxy_keys::{KeyMetrics, Reload};
use proxy_upstream::TlsHandshake;

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

const CLIENT_TO_UPSTREAM: &str = "client_to_upstream";
const UPSTREAM_TO_CLIENT: &str = "upstream_to_client";

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

/// A metric that can be added to the registry, with or without a unit.
trait Registered {
    fn register_in(
        self: Box<Self>,
        registry: &mut Registry,
        name: &str,
        help: &str,
        unit: Option<Unit>,
    );
}

impl<M: prometheus_client::registry::Metric> Registered for M {
    fn register_in(
        self: Box<Self>,
        registry: &mut Registry,
        name: &str,
        help: &str,
        unit: Option<Unit>,
    ) {
        match unit {
            Some(unit) => registry.register_with_unit(name, help, unit, *self),
            None => registry.register(name, help, *self),
        }
    }
}

/// Shared consoles' counters, booked from [`HubTotals`] every second.
#[derive(Debug, Default)]
struct SharedConsoleMetrics {
    bytes_from_vms: Counter,
    bytes_to_viewers: Counter,
    messages_to_viewers: Counter,
}

impl SharedConsoleMetrics {
    fn book(&self, totals: &HubTotals) {
        use std::sync::atomic::Ordering::Relaxed;
        for (counter, total) in [
            (&self.bytes_from_vms, &totals.bytes_from_vms),
            (&self.bytes_to_viewers, &totals.bytes_to_viewers),
            (&self.messages_to_viewers, &totals.messages_to_viewers),
        ] {
            let total = total.load(Relaxed);
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }
}

/// The proxy's metrics. Names start with `ws_proxy_`; no label ever holds a token, user or VM
/// name (labels are low-cardinality outcome, reason and direction names).
#[derive(Debug)]
pub struct ProxyMetrics {
    registry: Registry,
    active_sessions: Gauge,
    sessions: Family<OutcomeLabels, Counter>,
    rejections: Family<ReasonLabels, Counter>,
    relayed_bytes: Family<DirectionLabels, Counter>,
    relayed_frames: Family<DirectionLabels, Counter>,
    shared: SharedConsoleMetrics,
    upstream_connect: Histogram,
    upstream_tls_handshakes: Family<KindLabels, Counter>,
    deflate_sessions: Counter,
    session_duration: Histogram,
    tls_reloads: Family<ResultLabels, Counter>,
    key_reloads: Family<ResultLabels, Counter>,
    keys_loaded: Gauge,
    console: ConsoleMetrics,
    store: StoreMetrics,
}

impl Default for ProxyMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ProxyMetrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let relayed_bytes = Family::<DirectionLabels, Counter>::default();
        let relayed_frames = Family::<DirectionLabels, Counter>::default();
        for direction in [CLIENT_TO_UPSTREAM, UPSTREAM_TO_CLIENT] {
            relayed_bytes
                .get_or_create(&DirectionLabels { direction })
                .inc_by(0);
            relayed_frames
                .get_or_create(&DirectionLabels { direction })
                .inc_by(0);
        }
        let metrics = Self {
            active_sessions: Gauge::default(),
            sessions: Family::default(),
            rejections: Family::default(),
            relayed_bytes,
            relayed_frames,
            shared: SharedConsoleMetrics::default(),
            // 1 ms .. ~33 s.
            upstream_connect: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            upstream_tls_handshakes: Family::default(),
            deflate_sessions: Counter::default(),
            // 1 s .. ~36 h.
            session_duration: Histogram::new(exponential_buckets(1.0, 2.0, 18)),
            tls_reloads: Family::default(),
            key_reloads: Family::default(),
            keys_loaded: Gauge::default(),
            console: ConsoleMetrics::default(),
            store: StoreMetrics::default(),
            registry: Registry::default(),
        };
        let mut registry = Registry::with_prefix("ws_proxy");
        metrics.register(&mut registry);
        Self {
            registry,
            ..metrics
        }
    }

    /// Adds every metric to `registry`.
    fn register(&self, registry: &mut Registry) {
        let mut add = |name: &str, help: &str, unit: Option<Unit>, metric: Box<dyn Registered>| {
            metric.register_in(registry, name, help, unit);
        };
        let seconds = Some(Unit::Seconds);
        add(
            "active_sessions",
            "Console sessions currently relaying",
            None,
            Box::new(self.active_sessions.clone()),
        );
        add(
            "sessions",
            "Relayed console sessions that ended, by what ended them",
            None,
            Box::new(self.sessions.clone()),
        );
        add(
            "rejections",
            "Console requests refused before relaying, by reason",
            None,
            Box::new(self.rejections.clone()),
        );
        add(
            "relayed",
            "Payload bytes of data frames relayed, by direction (booked every second while sessions run)",
            Some(Unit::Bytes),
            Box::new(self.relayed_bytes.clone()),
        );
        add(
            "relayed_frames",
            "Data frames relayed, by direction (booked every second while sessions run)",
            None,
            Box::new(self.relayed_frames.clone()),
        );
        add(
            "shared_console_from_vms",
            "Bytes the VMs of shared consoles sent their hubs",
            Some(Unit::Bytes),
            Box::new(self.shared.bytes_from_vms.clone()),
        );
        add(
            "shared_console_to_viewers",
            "Bytes the hubs of shared consoles sent their viewers (RFB, before WebSocket framing)",
            Some(Unit::Bytes),
            Box::new(self.shared.bytes_to_viewers.clone()),
        );
        add(
            "shared_console_updates_to_viewers",
            "Messages the hubs of shared consoles sent their viewers",
            None,
            Box::new(self.shared.messages_to_viewers.clone()),
        );
        add(
            "upstream_connect",
            "Time to open the upstream WebSocket (TCP, TLS and upgrade), failures included",
            seconds.clone(),
            Box::new(self.upstream_connect.clone()),
        );
        add(
            "upstream_tls_handshakes",
            "TLS handshakes with the API server, by kind: full, or resumed from a session ticket",
            None,
            Box::new(self.upstream_tls_handshakes.clone()),
        );
        add(
            "permessage_deflate_sessions",
            "Console sessions whose browser leg negotiated permessage-deflate",
            None,
            Box::new(self.deflate_sessions.clone()),
        );
        add(
            "session_duration",
            "Duration of relayed console sessions",
            seconds,
            Box::new(self.session_duration.clone()),
        );
        add(
            "tls_reloads",
            "Changes of the console port's TLS files, by whether the new pair loaded",
            None,
            Box::new(self.tls_reloads.clone()),
        );
        add(
            "key_reloads",
            "Changes of the token key files, by whether the new keys loaded",
            None,
            Box::new(self.key_reloads.clone()),
        );
        add(
            "keys_loaded",
            "Token verification keys in use",
            None,
            Box::new(self.keys_loaded.clone()),
        );
        self.console.register(registry);
        self.store.register(registry);
    }

    /// The number of sessions relaying right now.
    pub fn active_sessions(&self) -> i64 {
        self.active_sessions.get()
    }

    /// How many requests were refused for `reason` (a [`Rejection::label`](crate::Rejection::label)).
    pub fn rejections(&self, reason: &'static str) -> u64 {
        self.rejections
            .get_or_create(&ReasonLabels { reason })
            .get()
    }

    /// Renders every metric in the Prometheus text exposition format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)?;
        Ok(text)
    }

    pub(crate) fn deflate_negotiated(&self) {
        self.deflate_sessions.inc();
    }

    pub(crate) fn session_started(&self) {
        self.active_sessions.inc();
    }

    /// Books what live sessions relayed since the last call (every second, from the
    /// engine), and what the hubs of shared consoles did, so `rate()` follows traffic as it
    /// happens rather than when sessions end.
    pub(crate) fn book_live(&self, sessions: &[Arc<LiveStats>], hubs: Option<&HubTotals>) {
        for live in sessions {
            self.book(live);
        }
        if let Some(totals) = hubs {
            self.shared.book(totals);
        }
    }

    fn book(&self, live: &LiveStats) {
        let (client_to_upstream, upstream_to_client) = live.take_unreported();
        for (direction, stats) in [
            (CLIENT_TO_UPSTREAM, client_to_upstream),
            (UPSTREAM_TO_CLIENT, upstream_to_client),
        ] {
            let labels = DirectionLabels { direction };
            self.relayed_bytes
                .get_or_create(&labels)
                .inc_by(stats.bytes);
            self.relayed_frames
                .get_or_create(&labels)
                .inc_by(stats.frames);
        }
    }

    /// Records a finished session (what its live counters did not book yet); the gauge drops
    /// last, so a reader that sees it fall also sees the session's counters.
    pub(crate) fn session_ended(&self, outcome: &RelayOutcome, live: &LiveStats) {
        self.sessions
            .get_or_create(&OutcomeLabels {
                outcome: outcome.ended_by.label(),
            })
            .inc();
        live.publish(outcome.client_to_upstream, outcome.upstream_to_client);
        self.book(live);
        self.session_duration
            .observe(outcome.duration.as_secs_f64());
        self.active_sessions.dec();
    }

    pub(crate) fn rejected(&self, reason: &'static str) {
        self.rejections
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }

    /// How many changes of the TLS files loaded (`ok`) or were refused (`failed`).
    pub fn tls_reloads(&self, result: &'static str) -> u64 {
        self.tls_reloads
            .get_or_create(&ResultLabels { result })
            .get()
    }

    pub(crate) fn tls_reload(&self, reload: Reload) {
        count_reload(&self.tls_reloads, reload);
    }

    /// How many changes of the key files loaded (`ok`) or were refused (`failed`).
    pub fn key_reloads(&self, result: &'static str) -> u64 {
        self.key_reloads
            .get_or_create(&ResultLabels { result })
            .get()
    }

    /// What the [`KeyRing`](proxy_keys::KeyRing) reports after each reload.
    pub(crate) fn store(&self) -> &StoreMetrics {
        &self.store
    }

    pub(crate) fn console(&self) -> &ConsoleMetrics {
        &self.console
    }

    pub(crate) fn key_metrics(&self) -> KeyMetrics {
        let (reloads, loaded) = (self.key_reloads.clone(), self.keys_loaded.clone());
        KeyMetrics::new(move |reload, keys| {
            count_reload(&reloads, reload);
            loaded.set(i64::try_from(keys).unwrap_or(i64::MAX));
        })
    }

    pub(crate) fn upstream_dialled(&self, took: Duration, tls: Option<TlsHandshake>) {
        self.upstream_connect.observe(took.as_secs_f64());
        if let Some(kind) = tls {
            self.upstream_tls_handshakes
                .get_or_create(&KindLabels { kind: kind.label() })
                .inc();
        }
    }

    /// Upstream TLS handshakes of one kind so far.
    pub fn upstream_tls_handshakes(&self, kind: TlsHandshake) -> u64 {
        self.upstream_tls_handshakes
            .get_or_create(&KindLabels { kind: kind.label() })
            .get()
    }
}

/// Counts a reload of watched files under `result="ok"` or `result="failed"`.
fn count_reload(counter: &Family<ResultLabels, Counter>, reload: Reload) {
    let result = match reload {
        Reload::Unchanged => return,
        Reload::Reloaded => "ok",
        Reload::Failed => "failed",
    };
    counter.get_or_create(&ResultLabels { result }).inc();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_has_every_family() {
        let metrics = ProxyMetrics::new();
        metrics.rejected("invalid_token");
        metrics.upstream_dialled(Duration::from_millis(3), None);
        metrics.session_started();
        assert_eq!(metrics.active_sessions(), 1);
        assert_eq!(metrics.rejections("invalid_token"), 1);
        let text = metrics.encode().unwrap();
        for expected in [
            "ws_proxy_active_sessions 1",
            "ws_proxy_rejections_total{reason=\"invalid_token\"} 1",
            "ws_proxy_relayed_bytes_total{direction=\"client_to_upstream\"} 0",
            "ws_proxy_relayed_bytes_total{direction=\"upstream_to_client\"} 0",
            "ws_proxy_upstream_connect_seconds_count 1",
            "# TYPE ws_proxy_session_duration_seconds histogram",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in\n{text}");
        }
    }
}
