//! Dials the KubeVirt VNC subresource for a verified grant.
//!
//! (Crate docs, with a compiling example, are written by the `proxy-upstream` issue.)

mod connector;
mod ws_transport;

pub use connector::{ConnectError, Connector, FailureClass, Upstream, UpstreamTarget};
pub use ws_transport::WsTransport;
