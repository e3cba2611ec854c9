//! Shared helpers of the criterion benchmarks (see the `[[bench]]` targets in Cargo.toml).

pub mod tungstenite_transport;
