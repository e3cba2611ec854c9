//! placeholder
mod config;
mod engine;
mod http;
mod metrics;
mod path;
mod reject;

pub use config::{Limits, ServerConfig};
pub use engine::ProxyEngine;
pub use metrics::ProxyMetrics;
pub use path::{ConsolePath, PathError, PathPrefix, parse_console_path, redact_target};
pub use reject::{RejectStyle, Rejection};
