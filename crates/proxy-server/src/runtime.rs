//! The one runtime policy of every way the proxy runs (the `ws-proxy` binary,
//! [`WebsocketProxy::run`](crate::WebsocketProxy::run) and
//! [`run_in_thread`](crate::WebsocketProxy::run_in_thread), the demo).

/// Builds the async runtime: one thread when this process may use one CPU (pinned with
/// `taskset`, or a one-CPU container), so no session is handed between threads; otherwise
/// tokio's multi-thread runtime with one worker per usable CPU. The measurements behind the
/// choice are in `docs/performance-log.md` ("What was changed, and what each change bought",
/// item 2).
pub fn build_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    tracing::info!(
        usable_cpus = cpus,
        flavour = if cpus == 1 {
            "current-thread"
        } else {
            "multi-thread"
        },
        "starting the async runtime"
    );
    builder.enable_all().thread_name("ws-proxy-worker").build()
}
