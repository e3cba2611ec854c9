//! placeholder
pub mod cli;
mod client;
mod config;
mod engine;
mod facade;
mod http;
pub mod logging;
mod metrics;
mod path;
mod reject;
mod signal;

pub use config::{Limits, ServerConfig};
pub use engine::ProxyEngine;
pub use facade::{
    BuildError, KubeVirtProxyEngine, RunError, WebsocketProxy, WebsocketProxyBuilder,
};
pub use metrics::ProxyMetrics;
pub use path::{ConsolePath, PathError, PathPrefix, parse_console_path, redact_target};
pub use reject::{RejectStyle, Rejection};
pub use signal::shutdown_signal;
