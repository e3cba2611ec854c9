//! The WebSocket layer of both legs of a ws-proxy session (RFC 6455), on top of
//! [`proxy_core`]'s frame seam and below everything that knows about tokens or KubeVirt.
//!
//! - [`WireTransport`]: the frame codec. A WebSocket connection whose handshake is done, seen as
//!   a [`FrameTransport`](proxy_core::FrameTransport) (stream and sink of
//!   [`Frame`](proxy_core::Frame)s) in either [`WireRole`], with [`WireLimits`] on what it
//!   accepts. It holds no buffer while the connection is quiet and moves payloads without
//!   copying them; why the project has its own codec is measured in `docs/performance.md`.
//! - The server half of the opening handshake ([`read_request_head`], [`accept_upgrade`],
//!   [`choose_subprotocol`], [`write_switching_protocols`]): the browser leg.
//! - The client half ([`upgrade`] with an [`UpgradeRequest`]): the upstream leg, which hands
//!   the bytes read past the `101` answer to the codec.
//! - [`FrameHeader`], [`derive_accept_key`] and the subprotocol names the system speaks
//!   ([`subprotocol`]).
//!
//! Nothing here dials, verifies tokens or logs; errors are this crate's own types.
//!
//! ```
//! use futures_util::{SinkExt as _, StreamExt as _};
//! use proxy_core::Frame;
//! use proxy_wire::{WireLimits, WireRole, WireTransport};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! // Two ends of one connection whose handshake is done: a client and a server.
//! let (client_io, server_io) = tokio::io::duplex(64 * 1024);
//! let limits = WireLimits::max_message(1 << 20);
//! let mut client = WireTransport::new(client_io, WireRole::Client, limits);
//! let mut server = WireTransport::new(server_io, WireRole::Server, limits);
//!
//! client.send(Frame::Binary("RFB 003.008\n".into())).await.unwrap();
//! let received = server.next().await.unwrap().unwrap();
//! assert_eq!(received, Frame::Binary("RFB 003.008\n".into()));
//! # }
//! ```

mod client;
mod codec;
mod deflate;
mod frame_header;
mod handshake;
mod server;

pub use client::{
    ClientHandshakeError, MAX_REFUSAL_BODY_BYTES, MAX_RESPONSE_HEAD_BYTES, UpgradeRequest,
    Upgraded, upgrade,
};
pub use codec::{WIRE_READ_CHUNK_BYTES, WireLimits, WireProtocolError, WireRole, WireTransport};
pub use deflate::{
    DEFLATE_MIN_MESSAGE_BYTES, InflateError, PERMESSAGE_DEFLATE, PerMessageDeflate,
    deflate_message, inflate_message,
};
pub use frame_header::{
    FrameHeader, HeaderError, MAX_HEADER_BYTES, OpCode, is_sendable_close_code,
};
pub use handshake::{derive_accept_key, generate_key, list_elements, lists_token};
pub use server::{
    HeadError, MAX_HEADERS, RequestHead, UpgradeError, accept_upgrade, choose_subprotocol,
    read_request_head, write_switching_protocols,
};

/// The WebSocket subprotocols of a console session, in one place.
pub mod subprotocol {
    /// What KubeVirt's VNC subresource speaks: binary messages carrying the RFB stream.
    pub const KUBEVIRT_PLAIN: &str = "plain.kubevirt.io";
    /// What noVNC 0.6 to 1.1 offers (binary messages); later noVNC offers none.
    pub const BINARY: &str = "binary";
    /// noVNC's old base64 text framing; the proxy does not transcode and never chooses it.
    pub const BASE64: &str = "base64";
}
