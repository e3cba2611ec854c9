//! The data path of ws-proxy: a transport-agnostic, bidirectional WebSocket frame relay.
//!
//! (Crate docs, with a compiling example, are written by the `proxy-core` issue.)

mod frame;
mod relay;
mod transport;

pub use frame::{CloseFrame, Frame, close_code};
pub use relay::{DirectionStats, EndReason, Keepalive, RelayConfig, RelayOutcome, Side, relay};
pub use transport::{FrameTransport, TransportError};
