//! The data path of ws-proxy: a transport-agnostic, bidirectional WebSocket frame relay.
//!
//! [`relay`] moves [`Frame`]s between a client and an upstream, both seen through the
//! [`FrameTransport`] seam (a `Stream` + `Sink` of frames), until the session ends, and returns a
//! [`RelayOutcome`] with per-direction counters, who ended the session and the close frames sent.
//! This crate knows no WebSocket library: `proxy-upstream` adapts `tokio-tungstenite`, and
//! [`MemoryTransport`] is an in-memory pair for tests and fakes.
//!
//! # Guarantees
//!
//! - **Order and exactly-once** per direction for data frames (binary, text). Payloads are
//!   [`bytes::Bytes`] and move without copying.
//! - **Bounded memory.** The relay holds at most one frame per direction that the destination
//!   has not accepted yet; while it waits, it reads nothing more from the source, so a slow side
//!   slows the other down through TCP flow control. Everything else is the transports' own
//!   buffers (for tungstenite: read buffer, write buffer target plus one message, and the
//!   maximum message size).
//! - **Batched flushing.** Frames are fed while the source has more ready; the destination is
//!   flushed once the source has none, so a burst costs one flush and a lone frame is sent at once.
//! - **Close semantics.** A close from one side is passed on to the other with its code and
//!   reason, the side that closed gets its reply (a client's stream is ended right after it, as
//!   RFC 6455 asks of the server), the relay waits (up to [`RelayConfig::close_timeout`]) for the
//!   other side's reply, then returns. A side that
//!   vanishes makes the relay close the other with 1001, a side that fails with 1011; timers and
//!   shutdown close both sides (codes and reasons in [`close_reason`]).
//! - **Ping/pong per hop.** Pings are answered by each hop's transport and never forwarded; the
//!   relay pings the client itself ([`Keepalive`], on by default) to detect half-open TCP and to
//!   keep quiet consoles alive behind load balancers.
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use futures_util::{SinkExt, StreamExt};
//! use proxy_core::{EndReason, Frame, MemoryTransport, RelayConfig, relay};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (mut browser, client) = MemoryTransport::pair(16);
//! let (upstream, mut console) = MemoryTransport::pair(16);
//! let session = tokio::spawn(async move {
//!     relay(client, upstream, &RelayConfig::default(), std::future::pending()).await
//! });
//!
//! browser.send(Frame::Binary(Bytes::from_static(b"RFB 003.008\n"))).await.unwrap();
//! assert_eq!(
//!     console.next().await.unwrap().unwrap(),
//!     Frame::Binary(Bytes::from_static(b"RFB 003.008\n"))
//! );
//!
//! // The browser leaves: its close reaches the console, which replies.
//! browser.send(Frame::Close(None)).await.unwrap();
//! assert_eq!(console.next().await.unwrap().unwrap(), Frame::Close(None));
//! console.send(Frame::Close(None)).await.unwrap();
//!
//! let outcome = session.await.unwrap();
//! assert!(matches!(outcome.ended_by, EndReason::ClientClosed(None)));
//! assert_eq!(outcome.client_to_upstream.bytes, 12);
//! # }
//! ```

mod error_chain;
mod frame;
mod memory;
mod relay;
mod transport;

pub use error_chain::ErrorChain;
pub use frame::{CloseFrame, Frame, MAX_CLOSE_REASON_LEN, MaskedPayload, apply_mask, close_code};
pub use memory::MemoryTransport;
pub use relay::{
    DirectionStats, EndReason, Keepalive, LiveStats, RelayConfig, RelayOutcome, Side, StopRequest,
    close_reason, relay, relay_controlled,
};
pub use transport::{FrameTransport, TransportError};
