//! The metrics of what the proxy does inside console streams, for the proxy's registry.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MessageLabels {
    message: &'static str,
}

/// The metrics of what the proxy does inside console streams: observers and recordings.
#[derive(Debug, Clone, Default)]
pub struct ConsoleMetrics {
    observer_sessions: Counter,
    observer_input_dropped: Family<MessageLabels, Counter>,
    recordings_active: Gauge,
    recording_bytes: Counter,
    recordings_incomplete: Family<ReasonLabels, Counter>,
}

impl ConsoleMetrics {
    /// Adds these metrics to `registry` (the proxy's, under its `ws_proxy_` prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "observer_sessions",
            "Console sessions opened with an observer token (input not passed to the VM)",
            self.observer_sessions.clone(),
        );
        registry.register(
            "observer_input_dropped",
            "Input messages of observers taken out before the VM, by RFB message",
            self.observer_input_dropped.clone(),
        );
        registry.register(
            "recordings_active",
            "Session recordings being written",
            self.recordings_active.clone(),
        );
        registry.register_with_unit(
            "recording_written",
            "Bytes written to session recordings",
            Unit::Bytes,
            self.recording_bytes.clone(),
        );
        registry.register(
            "recordings_incomplete",
            "Recordings that stopped before their session ended or could not start, by reason",
            self.recordings_incomplete.clone(),
        );
    }

    /// A session opened with an observer token.
    pub fn observer_session(&self) {
        self.observer_sessions.inc();
    }

    /// An observer's input message of kind `message` was taken out.
    pub fn observer_input_dropped(&self, message: &'static str) {
        self.observer_input_dropped
            .get_or_create(&MessageLabels { message })
            .inc();
    }

    /// A recording that should have started did not.
    pub fn recording_not_started(&self) {
        self.recordings_incomplete
            .get_or_create(&ReasonLabels {
                reason: "not_started",
            })
            .inc();
    }
}

impl crate::recording::RecordingObserver for ConsoleMetrics {
    fn started(&self) {
        self.recordings_active.inc();
    }

    fn wrote(&self, bytes: u64) {
        self.recording_bytes.inc_by(bytes);
    }

    fn ended(&self, incomplete: Option<crate::recording::Incomplete>) {
        self.recordings_active.dec();
        if let Some(why) = incomplete {
            self.recordings_incomplete
                .get_or_create(&ReasonLabels {
                    reason: why.label(),
                })
                .inc();
        }
    }
}
