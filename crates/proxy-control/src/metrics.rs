//! The metrics of the state store and of what operators do to sessions, for the proxy's
//! registry.
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ByLabels {
    by: &'static str,
}

fn store_latency_histogram() -> Histogram {
    // 0.1 ms .. ~3 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 16))
}

/// The metrics of the state store and of what operators do to sessions.
#[derive(Debug, Clone)]
pub struct StoreMetrics {
    up: Gauge,
    errors: Family<OperationLabels, Counter>,
    latency: Family<OperationLabels, Histogram, fn() -> Histogram>,
    operator_closes: Family<ByLabels, Counter>,
    outage_decisions: Family<OperationLabels, Counter>,
}

impl Default for StoreMetrics {
    fn default() -> Self {
        // Up until a request fails.
        let up = Gauge::default();
        up.set(1);
        Self {
            up,
            errors: Family::default(),
            latency: Family::new_with_constructor(store_latency_histogram),
            operator_closes: Family::default(),
            outage_decisions: Family::default(),
        }
    }
}

impl StoreMetrics {
    /// Adds these metrics to `registry` (the proxy's, under its `ws_proxy_` prefix).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "state_store_up",
            "Whether the last request to the state store succeeded (1) or failed (0)",
            self.up.clone(),
        );
        registry.register(
            "state_store_errors",
            "Failed state store requests, by operation",
            self.errors.clone(),
        );
        registry.register_with_unit(
            "state_store_request",
            "Time of state store requests, by operation",
            Unit::Seconds,
            self.latency.clone(),
        );
        registry.register(
            "operator_closed_sessions",
            "Live sessions ended by an operator's close or a revocation",
            self.operator_closes.clone(),
        );
        registry.register(
            "state_store_outage_decisions",
            "Checks decided by the outage policy because the store could not be asked, by check",
            self.outage_decisions.clone(),
        );
    }

    /// Runs a store request, recording its time, whether it failed, and the store's health.
    pub async fn store_call<T, E>(
        &self,
        operation: &'static str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let started = std::time::Instant::now();
        let result = call.await;
        self.latency
            .get_or_create(&OperationLabels { operation })
            .observe(started.elapsed().as_secs_f64());
        if result.is_err() {
            self.errors
                .get_or_create(&OperationLabels { operation })
                .inc();
            self.up.set(0);
        } else {
            self.up.set(1);
        }
        result
    }

    /// A check decided by the outage policy.
    pub fn outage_decision(&self, operation: &'static str) {
        self.outage_decisions
            .get_or_create(&OperationLabels { operation })
            .inc();
    }

    /// A live session ended by an operator: `close` or `revoke`.
    pub fn operator_closed(&self, by: &'static str) {
        self.operator_closes.get_or_create(&ByLabels { by }).inc();
    }
}
